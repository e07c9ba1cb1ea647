"""The benchmark's images, generated once and cached under the work directory by size and seed."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from bench import diskgen
from bench.measure import sha256_file


@dataclass(frozen=True, slots=True)
class Images:
    size: int
    base: Path
    day1: Path
    extents_path: Path
    changed_bytes: int
    extent_count: int
    base_sha256: str
    day1_sha256: str

    def extents(self) -> list[tuple[int, int]]:
        return diskgen.read_extents(self.extents_path)[0]


def _say(text: str) -> None:
    print(text, flush=True)


def warm(images: Images) -> None:
    """Read both images (into the page cache, as for every tool) and check them against the
    sha256 recorded when they were generated."""
    for path, sha in ((images.base, images.base_sha256), (images.day1, images.day1_sha256)):
        if sha256_file(path) != sha:
            raise RuntimeError(f"{path} changed since it was generated: delete its folder")


def prepare(work: Path, size: int, seed: int, *, day: bool = True) -> Images:
    """Base and day-1 images (reused when their ``meta.json`` says they are complete)."""
    folder = work / "images" / f"{size}-seed{seed}-v{diskgen.VERSION}"
    meta_path = folder / "meta.json"
    base, day1, ext = folder / "base.raw", folder / "day1.raw", folder / "day1.extents.json"
    meta: dict[str, str | int] = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if not (base.exists() and "base_sha256" in meta):
        folder.mkdir(parents=True, exist_ok=True)
        _say(f"generating {size / 2**30:g} GiB disk (seed {seed}) in {folder} ...")
        t0 = time.perf_counter()
        diskgen.generate(base, size, seed)
        meta = {"size": size, "seed": seed, "base_sha256": sha256_file(base)}
        meta_path.write_text(json.dumps(meta, indent=1))
        _say(f"  base image: {time.perf_counter() - t0:.1f} s")
    if day and not (day1.exists() and ext.exists() and "day1_sha256" in meta):
        t0 = time.perf_counter()
        result = diskgen.day_of_activity(base, day1, seed)
        diskgen.write_extents(ext, result, size, seed)
        meta["day1_sha256"] = sha256_file(day1)
        meta_path.write_text(json.dumps(meta, indent=1))
        _say(f"  day-1 image: {time.perf_counter() - t0:.1f} s")
    extents, changed = diskgen.read_extents(ext) if day else ([], 0)
    return Images(
        size=size,
        base=base,
        day1=day1,
        extents_path=ext,
        changed_bytes=changed,
        extent_count=len(extents),
        base_sha256=str(meta["base_sha256"]),
        day1_sha256=str(meta.get("day1_sha256", "")),
    )
