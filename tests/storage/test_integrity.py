"""Faults: flipped bits, missing chunks, a full disk, a writer killed at random points."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from storage.engine.backend import StorageFull
from storage.engine.envelope import CorruptObject
from storage.engine.fs import FilesystemBackend
from storage.engine.reader import restore_disk
from storage.engine.repository import Repository
from storage.engine.source import FileSource
from storage.engine.verify import verify_repository
from storage.engine.writer import DiskInput, write_restore_point
from tests.storage.helpers import MiB, make_image, sha256
from tests.unavailable import unavailable

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def committed(tmp_path):
    repo = Repository.init(FilesystemBackend(tmp_path / "repo"), passphrase="pw")
    image = tmp_path / "disk.raw"
    make_image(image, 24 * MiB, seed=5)
    with FileSource(image) as source:
        point = write_restore_point(
            repo, vm_key="vm-1", vm_name="vm-1", disks=[DiskInput("vda", source)]
        )
    return repo, point, image


def _flip(path: Path, at: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    position = len(data) // 2 if at is None else at
    data[position] ^= 0x10
    os.chmod(path, 0o644)
    path.write_bytes(bytes(data))


def _first_chunk(repo, point):
    index = repo.disk_index(point.disk("vda").index)
    entry = repo.page(index.pages[0])[0]
    return entry, Path(repo.backend.describe()) / repo.chunk_key(entry.digest)


def test_a_flipped_bit_in_a_chunk_is_found_by_deep_verify_with_its_range(committed, tmp_path):
    repo, point, _ = committed
    entry, path = _first_chunk(repo, point)
    _flip(path)
    assert all(r.ok for r in verify_repository(repo, deep=False))  # present, so fast says ok
    [result] = verify_repository(repo, deep=True)
    assert not result.ok
    [problem] = result.problems
    assert (entry.offset, entry.end) in problem.ranges
    assert "corrupt" in problem.reasons[0]
    with pytest.raises(CorruptObject):  # never restored silently
        restore_disk(repo, point, "vda", tmp_path / "r.raw")


def test_a_missing_chunk_is_found_by_fast_verify(committed):
    repo, point, _ = committed
    entry, path = _first_chunk(repo, point)
    path.unlink()
    [result] = verify_repository(repo, deep=False)
    assert [(entry.offset, entry.end)] == result.problems[0].ranges[:1]
    assert "missing" in result.problems[0].reasons[0]


def test_a_flipped_bit_in_an_index_page_marks_the_page_range(committed):
    repo, point, _ = committed
    index = repo.disk_index(point.disk("vda").index)
    _flip(Path(repo.backend.describe()) / repo.index_key(index.pages[0]))
    [result] = verify_repository(repo, deep=False)
    assert result.problems[0].ranges == [(0, 24 * MiB)]
    assert "index page 0" in result.problems[0].reasons[0]


def test_a_flipped_bit_in_a_manifest_is_reported(committed):
    repo, point, _ = committed
    _flip(Path(repo.backend.describe()) / point.key, at=20)
    [result] = verify_repository(repo, deep=False)
    assert not result.ok and "manifest cannot be read" in result.manifest_error


def test_the_header_and_name_are_authenticated(committed):
    """A valid chunk copied under another chunk's name does not open."""
    repo, point, _ = committed
    index = repo.disk_index(point.disk("vda").index)
    entries = repo.page(index.pages[0])
    a, b = entries[0].digest, next(e.digest for e in entries if e.digest != entries[0].digest)
    root = Path(repo.backend.describe())
    os.chmod(root / repo.chunk_key(b), 0o644)
    (root / repo.chunk_key(b)).write_bytes((root / repo.chunk_key(a)).read_bytes())
    with pytest.raises(CorruptObject, match="authentication"):
        repo.get_chunk(b)


@pytest.fixture
def small_filesystem(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], capture_output=True
    )
    if result.returncode != 0:
        unavailable(f"mounting a 6 MiB tmpfs needs root: {result.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_a_clear_error_and_commits_nothing(small_filesystem, tmp_path):
    repo = Repository.init(FilesystemBackend(small_filesystem / "repo"), passphrase="pw")
    image = tmp_path / "big.raw"
    with open(image, "wb") as handle:
        handle.write(os.urandom(12 * MiB))  # incompressible, twice the space there is
    with FileSource(image) as source, pytest.raises(StorageFull, match="No space left"):
        write_restore_point(repo, vm_key="vm-1", vm_name="vm-1", disks=[DiskInput("vda", source)])
    assert repo.manifest_keys() == []
    assert not any(p.name.startswith(".tmp-") for p in (small_filesystem / "repo").rglob("*"))


_WRITER = """
import sys
from storage.engine.fs import FilesystemBackend
from storage.engine.repository import Repository
from storage.engine.source import FileSource
from storage.engine.writer import DiskInput, write_restore_point
repo = Repository.open(FilesystemBackend(sys.argv[1]), passphrase="pw")
parent = repo.find(sys.argv[3])
with FileSource(sys.argv[2]) as source:
    write_restore_point(repo, vm_key="vm-1", vm_name="vm-1", parent=parent,
                        disks=[DiskInput("vda", source)], workers=2)
print("done", flush=True)
"""


def _chunk_count(root: Path) -> int:
    return sum(1 for p in (root / "chunks").rglob("*") if p.is_file())


def test_a_writer_killed_at_random_points_damages_nothing(committed, tmp_path):
    repo, point, image = committed
    root = Path(repo.backend.describe())
    rng = random.Random(2026)
    killed_midway = 0
    for round_ in range(5):
        other = tmp_path / f"other-{round_}.raw"
        make_image(other, 96 * MiB, seed=100 + round_, regions=300)  # new data every round
        before, chunks_before = len(repo.manifest_keys()), _chunk_count(root)
        kill_after = rng.randrange(1, 24)  # of 24 windows: a random point in the write
        process = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(root), str(other), point.id],
            cwd=ROOT,
            stdout=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            if _chunk_count(root) - chunks_before >= kill_after:
                break
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)
        output, _ = process.communicate()
        after = len(repo.manifest_keys())
        if b"done" in output:
            assert after == before + 1
        else:
            killed_midway += 1
            assert after == before  # no partial restore point is visible
        for result in verify_repository(repo, deep=True):
            assert result.ok, result  # and every visible one is whole
    assert killed_midway >= 3
    restore_disk(repo, point, "vda", tmp_path / "r.raw")
    assert sha256(tmp_path / "r.raw") == sha256(image)
