"""``python -m storage``: list, verify and restore with only the repository and its passphrase
(a process with no Django settings and no database)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from storage.engine.fs import FilesystemBackend
from storage.engine.repository import Repository
from storage.engine.source import FileSource
from storage.engine.writer import DiskInput, write_restore_point
from tests.storage.helpers import MiB, make_image, sha256

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str, passphrase: str = "pw") -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "BACKUPCONSOLE_PASSPHRASE": passphrase}
    return subprocess.run(
        [sys.executable, "-m", "storage", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_stand_alone_list_verify_restore(tmp_path):
    repo = Repository.init(FilesystemBackend(tmp_path / "repo"), passphrase="pw")
    image = tmp_path / "disk.raw"
    make_image(image, 16 * MiB)
    with FileSource(image) as source:
        point = write_restore_point(
            repo, vm_key="web-1", vm_name="web-1", disks=[DiskInput("vda", source)]
        )
    listed = _cli("list", str(tmp_path / "repo"))
    assert listed.returncode == 0 and point.id in listed.stdout and "web-1" in listed.stdout
    verified = _cli("verify", "--deep", str(tmp_path / "repo"))
    assert (
        verified.returncode == 0
        and "1 restore point(s) checked (deep), 0 corrupt" in verified.stdout
    )
    target = tmp_path / "restored.raw"
    restored = _cli("restore", str(tmp_path / "repo"), point.id, "vda", str(target))
    assert restored.returncode == 0, restored.stderr
    assert sha256(target) == sha256(image)
    exported = _cli("export-key", str(tmp_path / "repo"))
    assert exported.returncode == 0 and '"kdf": "scrypt"' in exported.stdout
    assert "pw" not in exported.stdout.split()
    wrong = _cli("list", str(tmp_path / "repo"), passphrase="nope")
    assert wrong.returncode == 2 and "wrong passphrase" in wrong.stderr
    missing = _cli("restore", str(tmp_path / "repo"), "no-such-point", "vda", str(target))
    assert missing.returncode == 2 and "no restore point no-such-point" in missing.stderr
