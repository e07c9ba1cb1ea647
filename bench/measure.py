"""Measuring helpers: one child process's wall time and peak RSS, directory sizes, sha256."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

_T = TypeVar("_T")
_LAUNCH = Path(__file__).resolve().parent / "launch.py"


class StepFailed(RuntimeError):
    pass


@dataclass
class ToolRun:
    """One tool's figures (the keys of results.json) and the seconds of each of its steps."""

    name: str
    version: str
    options: str
    figures: dict[str, float | int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds (user + system) per step
    # Resident memory at its peak per step, and what it was made of (ours only).
    memory: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Step:
    seconds: float
    cpu_seconds: float  # user + system of the child
    peak_rss_mib: float
    output: str


def run(
    argv: Sequence[str],
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    what: str = "",
) -> Step:
    """Run ``argv`` to completion: its wall time, CPU time and own peak RSS, taken by
    ``launch.py`` (from ``os.wait4`` there, so this process's size does not leak into them)."""
    full_env = {**os.environ, **(env or {})}
    with tempfile.NamedTemporaryFile("r", suffix=".json", prefix="bench-step-") as result:
        proc = subprocess.Popen(  # noqa: S603 (fixed argv built by the benchmark)
            [sys.executable, "-I", str(_LAUNCH), result.name, *argv],
            cwd=cwd,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        assert proc.stdout is not None
        output = proc.stdout.read().decode(errors="replace")  # drain: never blocks the child
        proc.wait()
        text = result.read()
    if proc.returncode != 0 or not text:
        raise StepFailed(f"{what or argv[0]} could not be run:\n{output[-2000:]}")
    measured = json.loads(text)
    if measured["exit"] != 0:
        tail = "\n".join(output.splitlines()[-20:])
        raise StepFailed(f"{what or argv[0]} failed (exit {measured['exit']}):\n{tail}")
    return Step(measured["seconds"], measured["cpu_seconds"], measured["maxrss_kib"] / 1024, output)


def median_run(seconds: Sequence[float]) -> int:
    """The index of the median of repeated runs (the lower middle one for an even count)."""
    order = sorted(range(len(seconds)), key=lambda i: seconds[i])
    return order[(len(order) - 1) // 2]


def repeated_full(
    repeat: int,
    one: Callable[[str], tuple[float, _T]],
    seconds: dict[str, float],
    cpu: dict[str, float],
) -> _T:
    """A tool's full backup ``repeat`` times: ``one(label)`` (labels "full", or "full-1"...) runs
    one into a new repository and records its CPU seconds under the label. The median run
    becomes "full" in ``seconds`` and ``cpu`` (every run's seconds are kept); returns the last
    run's result, whose repository the incremental builds on."""
    labels = ["full"] if repeat == 1 else [f"full-{n}" for n in range(1, repeat + 1)]
    runs = [one(label) for label in labels]
    middle = median_run([wall for wall, _ in runs])
    seconds["full"] = runs[middle][0]
    if repeat > 1:
        seconds.update({label: wall for label, (wall, _) in zip(labels, runs, strict=True)})
        cpu["full"] = cpu[labels[middle]]
    return runs[-1][1]


def tree_bytes(path: str | os.PathLike[str]) -> int:
    """Apparent size of every file under ``path``."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):  # a temporary file just renamed
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def sha256_file(path: str | os.PathLike[str], block: int = 8 << 20) -> str:
    digest = hashlib.sha256()
    buf = bytearray(block)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()


def find_file(root: str | os.PathLike[str], name: str) -> Path:
    """The one file called ``name`` under ``root`` (restic restores under the full source path)."""
    hits = sorted(Path(root).rglob(name))
    if len(hits) != 1:
        raise StepFailed(f"expected one {name} under {root}, found {len(hits)}")
    return hits[0]
