"""restic and borg on the benchmark images: full, incremental, restores (sha256-checked).

Both are the Debian packages (installed here with apt-get when missing and running as root). Each
backs up the same path, ``src/disk.raw``, hard-linked first to the base image and then to the
day-1 image, so each tool sees one file that changed. Neither uses change tracking: the
incremental re-reads the whole disk, so its read share is 1.0.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from bench.images import Images
from bench.measure import (
    StepFailed,
    ToolRun,
    find_file,
    repeated_full,
    run,
    sha256_file,
    tree_bytes,
)

PASSPHRASE = "bench"  # noqa: S105 (throw-away benchmark repositories)
GiB = 1 << 30


class PeerUnavailable(RuntimeError):
    pass


def ensure_installed() -> None:
    missing = [tool for tool in ("restic", "borg") if shutil.which(tool) is None]
    if not missing:
        return
    if os.geteuid() != 0:
        raise PeerUnavailable(
            f"{' and '.join(missing)} not installed, and not running as root to install them: "
            "run `sudo apt-get install -y restic borgbackup` (or `make bench` as root)."
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "restic", "borgbackup"]
    if subprocess.run(cmd, env=env, check=False).returncode != 0:  # noqa: S603
        subprocess.run(["apt-get", "update", "-q"], env=env, check=True)  # noqa: S607
        subprocess.run(cmd, env=env, check=True)  # noqa: S603
    still = [tool for tool in ("restic", "borg") if shutil.which(tool) is None]
    if still:
        raise PeerUnavailable(f"apt-get did not install {', '.join(still)}")


class _Peer:
    name = ""
    options = ""

    def __init__(self, work: Path) -> None:
        self.dir = work / self.name
        shutil.rmtree(self.dir, ignore_errors=True)
        self.repo, self.src = self.dir / "repo", self.dir / "src"
        self.src.mkdir(parents=True)
        self.peak_rss = 0.0
        self.cpu: dict[str, float] = {}

    def env(self) -> dict[str, str]:
        return {}

    def version(self) -> str:
        raise NotImplementedError

    def _run(self, argv: list[str], what: str, cwd: Path | None = None) -> tuple[float, str]:
        step = run(argv, cwd=cwd, env=self.env(), what=f"{self.name} {what}")
        self.peak_rss = max(self.peak_rss, step.peak_rss_mib)
        self.cpu[what] = step.cpu_seconds
        return step.seconds, step.output

    def init(self) -> None:
        raise NotImplementedError

    def backup(self, snapshot: str) -> tuple[float, str]:
        """Back up ``src/disk.raw``; seconds and the snapshot's id."""
        raise NotImplementedError

    def restore(self, snapshot_id: str, target: Path, label: str) -> tuple[float, Path]:
        raise NotImplementedError

    def stage(self, image: Path) -> None:
        disk = self.src / "disk.raw"
        disk.unlink(missing_ok=True)
        os.link(image, disk)

    def fresh(self) -> None:
        """A new, empty repository (and no cache of an earlier one)."""
        for leftover in self.dir.iterdir():
            if leftover != self.src:
                shutil.rmtree(leftover)
        self.init()

    def bench(self, images: Images, repeat: int = 1) -> ToolRun:
        out = ToolRun(self.name, self.version(), self.options)
        self.stage(images.base)

        def one_full(label: str) -> tuple[float, str]:
            self.fresh()  # each full backup into a new repository
            return self.backup(label)

        full_id = repeated_full(repeat, one_full, out.seconds, self.cpu)
        before = tree_bytes(self.repo)
        self.stage(images.day1)
        out.seconds["incr"], day1_id = self.backup("incr")
        growth = tree_bytes(self.repo) - before
        for label, snap, sha in (
            ("restore_full", full_id, images.base_sha256),
            ("restore", day1_id, images.day1_sha256),
        ):
            target = self.dir / label
            out.seconds[label], restored = self.restore(snap, target, label)
            if sha256_file(restored) != sha:
                raise StepFailed(f"{self.name}: restored {label} differs from the image (sha256)")
            shutil.rmtree(target)
        out.cpu = {k: v for k, v in self.cpu.items() if k != "init"}
        out.figures = {
            "full_gib_s": images.size / GiB / out.seconds["full"],
            "incr_s": out.seconds["incr"],
            "incr_read_share": 1.0,
            "incr_repo_growth_bytes": growth,
            "changed_bytes": images.changed_bytes,
            "restore_gib_s": images.size / GiB / out.seconds["restore"],
            "peak_rss_mib": self.peak_rss,
        }
        shutil.rmtree(self.dir, ignore_errors=True)
        return out


class Restic(_Peer):
    name = "restic"
    options = "repository v2, default compression (auto = zstd), AES-256 + Poly1305-AES"

    def env(self) -> dict[str, str]:
        return {"RESTIC_PASSWORD": PASSPHRASE, "RESTIC_CACHE_DIR": str(self.dir / "cache")}

    def version(self) -> str:
        return run(["restic", "version"]).output.split()[1]

    def init(self) -> None:
        self._run(["restic", "-r", str(self.repo), "init"], "init")

    def backup(self, snapshot: str) -> tuple[float, str]:
        argv = ["restic", "-r", str(self.repo), "backup", "--json", "--host", "bench", "disk.raw"]
        seconds, output = self._run(argv, snapshot, cwd=self.src)
        for line in output.splitlines():
            if '"summary"' in line:
                return seconds, str(json.loads(line)["snapshot_id"])
        raise StepFailed(f"restic backup {snapshot}: no summary in its output")

    def restore(self, snapshot_id: str, target: Path, label: str) -> tuple[float, Path]:
        argv = ["restic", "-r", str(self.repo), "restore", snapshot_id, "--target", str(target)]
        seconds, _ = self._run(argv, label)  # 0.14 has no --sparse: writes every byte
        return seconds, find_file(target, "disk.raw")


class Borg(_Peer):
    name = "borg"
    options = "-e repokey-blake2 (encrypted), default lz4, default chunker, extract --sparse"

    def env(self) -> dict[str, str]:
        return {
            "BORG_PASSPHRASE": PASSPHRASE,
            "BORG_BASE_DIR": str(self.dir / "base"),
            "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes",
        }

    def version(self) -> str:
        return run(["borg", "--version"]).output.split()[1]

    def init(self) -> None:
        self._run(["borg", "init", "-e", "repokey-blake2", str(self.repo)], "init")

    def backup(self, snapshot: str) -> tuple[float, str]:
        argv = ["borg", "create", f"{self.repo}::{snapshot}", "disk.raw"]
        seconds, _ = self._run(argv, snapshot, cwd=self.src)
        return seconds, snapshot

    def restore(self, snapshot_id: str, target: Path, label: str) -> tuple[float, Path]:
        target.mkdir(parents=True)
        argv = ["borg", "extract", "--sparse", f"{self.repo}::{snapshot_id}"]
        seconds, _ = self._run(argv, label, cwd=target)
        return seconds, find_file(target, "disk.raw")


def bench_peers(
    images: Images, work: Path, say: Callable[[str], None] = print, repeat: int = 1
) -> list[ToolRun]:
    ensure_installed()
    runs = []
    for peer in (Restic, Borg):
        say(f"{peer.name} ...")
        runs.append(peer(work).bench(images, repeat))
    return runs
