"""Measuring helpers: one child process's wall time and peak RSS, directory sizes, sha256."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


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
    """Run ``argv`` to completion; wall time and the child's own ru_maxrss (from ``os.wait4``)."""
    full_env = {**os.environ, **(env or {})}
    start = time.perf_counter()
    proc = subprocess.Popen(  # noqa: S603 (fixed argv built by the benchmark)
        list(argv),
        cwd=cwd,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    output = proc.stdout.read().decode(errors="replace")  # drain: the child never blocks on it
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = "\n".join(output.splitlines()[-20:])
        raise StepFailed(f"{what or argv[0]} failed (exit {proc.returncode}):\n{tail}")
    return Step(seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, output)


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
