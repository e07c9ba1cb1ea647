"""Seeded generator of a realistic sparse raw VM disk, and of "a day of activity" on it.

    python -m bench.diskgen --size 4G --seed 1 base.raw [--day day1.raw --extents day1.json]

The disk: ~45 % holes (a tenth of them written as explicit zeros), ~20 % text/logs, ~15 %
executable-like binary, ~15 % random, ~5 % duplicates of 4 KiB-1 MiB copied from elsewhere on the
disk (see ``bench.layout``). The day: a sparse copy of the disk with 2 % of it rewritten in
scattered 4-256 KiB writes (60 % of the bytes in 16 hot zones), and the merged list of changed
extents that change tracking would report. Same seed, same bytes.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench import layout
from bench.content import Content
from bench.layout import DUP, HOLE, PAGE, MiB

VERSION = 2  # bump when the bytes for a given size and seed change (cached images are keyed by it)
WRITE_PIECE = 8 * MiB  # the generator never holds more than this much content at once
DAY_SHARE = 0.02
HOT_ZONES, HOT_SHARE = 16, 0.60
WRITE_PAGES = (1, 64)  # 4 KiB .. 256 KiB


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def data_extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """``(start, end)`` of each allocated range, by SEEK_DATA/SEEK_HOLE."""
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                return
            raise
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        yield start, end
        offset = end


def generate(path: str | os.PathLike[str], size: int, seed: int) -> dict[str, int]:
    """Write the disk to ``path`` (via a temporary name); returns bytes per kind."""
    regions = layout.plan(size, seed)
    content = Content(seed)
    tmp = Path(f"{os.fspath(path)}.partial")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, size)
        for region in regions:
            if region.kind in (HOLE, DUP):
                continue
            rng = np.random.default_rng([seed, 0xDA7A, region.index])
            for start in range(0, region.length, WRITE_PIECE):
                n = min(WRITE_PIECE, region.length - start)
                _pwrite_all(fd, content.make(region.kind, rng, n), region.offset + start)
        for region in regions:  # duplicates last: their sources are written by now
            if region.kind == DUP:
                _pwrite_all(fd, os.pread(fd, region.length, region.source), region.offset)
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.rename(path)
    kinds: dict[str, int] = {}
    for region in regions:
        kinds[region.kind] = kinds.get(region.kind, 0) + region.length
    return kinds


def copy_sparse(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Copy ``src`` to ``dst`` extent by extent: holes stay holes, written zeros stay written."""
    sfd = os.open(src, os.O_RDONLY)
    dfd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        size = os.fstat(sfd).st_size
        os.ftruncate(dfd, size)
        for start, end in data_extents(sfd, size):
            offset = start
            while offset < end:
                copied = os.copy_file_range(sfd, dfd, end - offset, offset, offset)
                if copied == 0:
                    raise OSError(errno.EIO, f"copy_file_range stopped at {offset} of {src}")
                offset += copied
    finally:
        os.close(sfd)
        os.close(dfd)


@dataclass(frozen=True, slots=True)
class Day:
    extents: list[tuple[int, int]]  # (offset, length), sorted, merged
    changed_bytes: int
    writes: int


def _plan_writes(size: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Writes ``(page, pages)`` until 2 % of the disk changed: 60 % of the changed bytes in the
    hot zones, 40 % uniform. Zones are ``size / 128`` (32 MiB on a 4 GiB disk), page aligned."""
    npages = size // PAGE
    zone_pages = min(32 * MiB, size // 128) // PAGE
    zones = rng.choice(npages // zone_pages, size=HOT_ZONES, replace=False) * zone_pages
    target = int(npages * DAY_SHARE)
    budgets = {True: int(target * HOT_SHARE), False: target - int(target * HOT_SHARE)}
    changed = np.zeros(npages, dtype=bool)
    writes: list[tuple[int, int]] = []
    lo, hi = np.log(WRITE_PAGES[0]), np.log(WRITE_PAGES[1] + 1)
    while budgets[True] > 0 or budgets[False] > 0:
        hot = bool(rng.random() < HOT_SHARE) if min(budgets.values()) > 0 else budgets[True] > 0
        pages = min(WRITE_PAGES[1], int(np.exp(rng.uniform(lo, hi))))
        if hot:
            zone = int(zones[rng.integers(0, HOT_ZONES)])
            start = zone + int(rng.integers(0, zone_pages - pages + 1))
        else:
            start = int(rng.integers(0, npages - pages + 1))
        new = pages - int(changed[start : start + pages].sum())
        changed[start : start + pages] = True
        budgets[hot] -= new
        writes.append((start, pages))
    return writes


def _runs(changed: np.ndarray) -> list[tuple[int, int]]:
    edges = np.flatnonzero(np.diff(np.concatenate([[0], changed.astype(np.int8), [0]])))
    return [
        (int(a) * PAGE, int(b - a) * PAGE) for a, b in zip(edges[::2], edges[1::2], strict=True)
    ]


def day_of_activity(
    base_path: str | os.PathLike[str], day_path: str | os.PathLike[str], seed: int
) -> Day:
    """Copy the base (sparse) to ``day_path`` and rewrite 2 % of it; returns the changed extents."""
    tmp = Path(f"{os.fspath(day_path)}.partial")
    copy_sparse(base_path, tmp)
    size = os.stat(tmp).st_size
    rng = np.random.default_rng([seed, 0xDA1])
    writes = _plan_writes(size, rng)
    content = Content(seed)
    kinds = (layout.TEXT, layout.BINARY, layout.RANDOM, layout.ZEROS)
    kind_p = (0.35, 0.25, 0.30, 0.10)
    changed = np.zeros(size // PAGE, dtype=bool)
    fd = os.open(tmp, os.O_WRONLY)
    try:
        for page, pages in writes:
            kind = kinds[int(rng.choice(len(kinds), p=kind_p))]
            _pwrite_all(fd, content.make(kind, rng, pages * PAGE), page * PAGE)
            changed[page : page + pages] = True
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.rename(day_path)
    extents = _runs(changed)
    return Day(extents, sum(length for _, length in extents), len(writes))


def write_extents(path: str | os.PathLike[str], day: Day, size: int, seed: int) -> None:
    doc = {
        "size": size,
        "seed": seed,
        "writes": day.writes,
        "changed_bytes": day.changed_bytes,
        "extents": [list(e) for e in day.extents],
    }
    Path(path).write_text(json.dumps(doc, separators=(",", ":")) + "\n")


def read_extents(path: str | os.PathLike[str]) -> tuple[list[tuple[int, int]], int]:
    doc = json.loads(Path(path).read_text())
    return [(int(o), int(n)) for o, n in doc["extents"]], int(doc["changed_bytes"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("output", help="raw image to write")
    ap.add_argument("--size", default="4G", help="disk size, e.g. 256M, 4G (default 4G)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--day", help="also write the day-1 image here")
    ap.add_argument("--extents", help="changed-extent list of the day (default: DAY.json)")
    args = ap.parse_args(argv)
    size = parse_size(args.size)
    t0 = time.perf_counter()
    kinds = generate(args.output, size, args.seed)
    shares = ", ".join(f"{k} {v / size:.1%}" for k, v in kinds.items())
    print(f"{args.output}: {size / 2**30:.2f} GiB in {time.perf_counter() - t0:.1f} s ({shares})")
    if args.day:
        t0 = time.perf_counter()
        day = day_of_activity(args.output, args.day, args.seed)
        write_extents(args.extents or f"{args.day}.json", day, size, args.seed)
        print(
            f"{args.day}: {day.writes} writes, {len(day.extents)} extents, "
            f"{day.changed_bytes / 2**20:.1f} MiB changed ({day.changed_bytes / size:.2%}) "
            f"in {time.perf_counter() - t0:.1f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
