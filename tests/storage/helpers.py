"""Small disk images and helpers for storage engine tests (real files, real repositories)."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

MiB = 1024 * 1024


def make_image(path: Path, size: int, *, seed: int = 1, regions: int = 40) -> None:
    """A sparse image: random, text-like and duplicated regions, 4 KiB aligned, holes between."""
    rng = random.Random(seed)
    with open(path, "wb") as handle:
        handle.truncate(size)
        for i in range(regions):
            length = rng.randrange(1, 128) * 4096
            offset = rng.randrange(0, max(size - length, 1)) // 4096 * 4096
            handle.seek(offset)
            if i % 3 == 0:
                handle.write(rng.randbytes(length))
            else:
                line = f"{i} INFO service started worker={rng.randrange(1000)}\n".encode()
                handle.write((line * (length // len(line) + 1))[:length])


def scribble(
    path: Path, *, seed: int, writes: int, granularity: int = 64 * 1024
) -> list[tuple[int, int]]:
    """Overwrite random aligned extents as a guest would; returns them as change tracking would."""
    rng = random.Random(seed)
    size = path.stat().st_size
    extents = []
    with open(path, "r+b") as handle:
        for _ in range(writes):
            length = rng.choice([1, 2, 3]) * granularity
            offset = rng.randrange(0, size - length) // granularity * granularity
            handle.seek(offset)
            handle.write(rng.randbytes(length) if rng.random() < 0.7 else bytes(length))
            extents.append((offset, length))
    return extents


def copy_sparse(src: Path, dst: Path) -> None:
    with open(src, "rb") as s, open(dst, "wb") as d:
        size = os.fstat(s.fileno()).st_size
        d.truncate(size)
        offset = 0
        while offset < size:
            try:
                start = os.lseek(s.fileno(), offset, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(s.fileno(), start, os.SEEK_HOLE)
            s.seek(start)
            d.seek(start)
            d.write(s.read(end - start))
            offset = end


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(4 * MiB):
            digest.update(block)
    return digest.hexdigest()
