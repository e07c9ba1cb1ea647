"""Our engine on the benchmark images, each step in its own process (``bench.ours_step``).

Timings are the wall time of each step's process, start-up and key unlock included, like the
peers' (a long-running agent would not pay those); the in-process seconds are kept too.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from bench.images import Images
from bench.measure import StepFailed, ToolRun, repeated_full, run, sha256_file, tree_bytes

ROOT = Path(__file__).resolve().parent.parent  # the project: `storage` imports from here
GiB = 1 << 30
OPTIONS = "encrypted (AES-256-GCM), zstd-{level}, 4 MiB aligned chunks, change tracking, 4 workers"


class _Ours:
    def __init__(self, work: Path, name: str) -> None:
        self.dir = work / name
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.repo = self.dir / "repo"
        self.peak_rss = 0.0
        self.inner: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.memory: dict[str, dict[str, float]] = {}

    def step(self, label: str, *args: str | Path) -> tuple[float, dict[str, object]]:
        argv = [sys.executable, "-m", "bench.ours_step", *map(str, args)]
        result = run(argv, cwd=ROOT, what=f"our {label}")
        self.peak_rss = max(self.peak_rss, result.peak_rss_mib)
        self.cpu[label] = result.cpu_seconds
        doc: dict[str, object] = json.loads(result.output.strip().splitlines()[-1])
        if "seconds" in doc:
            self.inner[f"{label} (in process)"] = float(doc["seconds"])  # type: ignore[arg-type]
        memory = doc.get("memory")
        if isinstance(memory, dict) and label != "init":
            self.memory[label] = memory
        busy = doc.get("busy")
        if isinstance(busy, dict):
            for part, value in busy.items():
                self.inner[f"{label} {part} (busy)"] = float(value)
        return result.seconds, doc

    def restore(self, label: str, point: str, sha256: str) -> float:
        target = self.dir / f"{label}.raw"
        seconds, _ = self.step(label, "restore", self.repo, point, target)
        if sha256_file(target) != sha256:
            raise StepFailed(f"ours: restored {label} differs from the image (sha256)")
        target.unlink()
        return seconds


def bench_ours(images: Images, work: Path, level: int = 1, repeat: int = 1) -> ToolRun:
    out = ToolRun("storage", "working tree", OPTIONS.format(level=level))
    ours = _Ours(work, "storage")

    def one_full(label: str) -> tuple[float, dict[str, object]]:
        shutil.rmtree(ours.repo, ignore_errors=True)  # each full backup into a new repository
        ours.step("init", "init", ours.repo, str(level))
        return ours.step(label, "full", ours.repo, images.base)

    full = repeated_full(repeat, one_full, out.seconds, ours.cpu)
    before = tree_bytes(ours.repo)
    out.seconds["incr"], day1 = ours.step(
        "incr", "incr", ours.repo, images.day1, str(full["id"]), images.extents_path
    )
    growth = tree_bytes(ours.repo) - before
    out.seconds["restore_full"] = ours.restore("restore_full", str(full["id"]), images.base_sha256)
    out.seconds["restore"] = ours.restore("restore", str(day1["id"]), images.day1_sha256)
    out.figures = {
        "full_gib_s": images.size / GiB / out.seconds["full"],
        "incr_s": out.seconds["incr"],
        "incr_read_share": int(day1["read_bytes"]) / images.size,  # type: ignore[call-overload]
        "incr_repo_growth_bytes": growth,
        "changed_bytes": images.changed_bytes,
        "restore_gib_s": images.size / GiB / out.seconds["restore"],
        "peak_rss_mib": ours.peak_rss,
    }
    out.seconds.update(ours.inner)
    out.cpu = {k: v for k, v in ours.cpu.items() if k != "init"}
    out.memory = ours.memory
    shutil.rmtree(ours.dir, ignore_errors=True)
    return out


def big_disk_rss(
    big: Images, work: Path, level: int = 1
) -> tuple[float, float, dict[str, float], dict[str, dict[str, float]]]:
    """Peak RSS of a full backup and a restore of the big disk; the same for its first quarter
    alone (same content, a quarter of the size: what differs is only the size); the seconds;
    what each step's peak was made of."""
    peaks: list[float] = []
    seconds: dict[str, float] = {}
    memory: dict[str, dict[str, float]] = {}
    for label, head in (("head", big.size // 4), ("", None)):
        ours = _Ours(work, f"storage-big{label}")
        ours.step("init", "init", ours.repo, str(level))
        extra = [] if head is None else [str(head)]
        full_s, full = ours.step("full", "full", ours.repo, big.base, *extra)
        target = ours.dir / "restore.raw"
        restore_s, _ = ours.step("restore", "restore", ours.repo, str(full["id"]), target)
        if head is None and sha256_file(target) != big.base_sha256:
            raise StepFailed("ours: restored big disk differs from the image (sha256)")
        target.unlink()
        shutil.rmtree(ours.dir, ignore_errors=True)
        peaks.append(ours.peak_rss)
        memory.update({f"{label or 'whole'} {step}": m for step, m in ours.memory.items()})
        seconds.update(
            {f"{label or 'whole'} full": full_s, f"{label or 'whole'} restore": restore_s}
        )
    head_rss, whole_rss = peaks
    return whole_rss, head_rss, seconds, memory
