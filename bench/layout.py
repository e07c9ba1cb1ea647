"""Where each kind of content goes on the synthetic disk: a seeded, 4 KiB-aligned plan.

Each kind gets an exact byte budget (its share of the disk); the budget is cut into regions of
log-uniformly distributed sizes, and all regions are shuffled and laid out end to end.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PAGE = 4096
KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

HOLE, ZEROS, TEXT, BINARY, RANDOM, DUP = "hole", "zeros", "text", "binary", "random", "dup"
DATA_KINDS = (TEXT, BINARY, RANDOM)

# Share of the disk per kind. Holes are 45 %, a tenth of them written as explicit zeros.
SHARES: dict[str, float] = {
    HOLE: 0.405,
    ZEROS: 0.045,
    TEXT: 0.20,
    BINARY: 0.15,
    RANDOM: 0.15,
    DUP: 0.05,
}
# Region sizes per kind, (smallest, largest), drawn log-uniformly.
SIZES: dict[str, tuple[int, int]] = {
    HOLE: (64 * KiB, 128 * MiB),
    ZEROS: (16 * KiB, 16 * MiB),
    TEXT: (16 * KiB, 32 * MiB),
    BINARY: (16 * KiB, 32 * MiB),
    RANDOM: (16 * KiB, 32 * MiB),
    DUP: (4 * KiB, 1 * MiB),
}


@dataclass(frozen=True, slots=True)
class Region:
    index: int
    offset: int
    length: int
    kind: str
    source: int = -1  # DUP only: disk offset the bytes are copied from


def log_uniform_pages(rng: np.random.Generator, low: int, high: int) -> int:
    """A size in [low, high], log-uniform, rounded to whole pages."""
    size = float(np.exp(rng.uniform(np.log(low), np.log(high))))
    return max(PAGE, round(size / PAGE) * PAGE)


def plan(size: int, seed: int) -> list[Region]:
    if size % PAGE or size < 64 * MiB:
        raise ValueError("disk size must be a multiple of 4 KiB and at least 64 MiB")
    rng = np.random.default_rng([seed, 0x1A7])
    pieces: list[tuple[int, str]] = []
    budgets = {kind: int(size * share) // PAGE * PAGE for kind, share in SHARES.items()}
    budgets[HOLE] += size - sum(budgets.values())  # rounding goes to the holes
    for kind, budget in budgets.items():
        low, high = SIZES[kind]
        while budget > 0:
            length = min(budget, log_uniform_pages(rng, low, high))
            pieces.append((length, kind))
            budget -= length
    order = rng.permutation(len(pieces))
    regions: list[Region] = []
    offset = 0
    for i, j in enumerate(order):
        length, kind = pieces[j]
        regions.append(Region(i, offset, length, kind))
        offset += length
    return _with_sources(regions, rng)


def _with_sources(regions: list[Region], rng: np.random.Generator) -> list[Region]:
    """Give each duplicate a source: a page-aligned piece of some text/binary/random region."""
    data = [r for r in regions if r.kind in DATA_KINDS]
    lengths = np.array([r.length for r in data])
    out: list[Region] = []
    for r in regions:
        if r.kind != DUP:
            out.append(r)
            continue
        fits = np.flatnonzero(lengths >= r.length)
        if len(fits) == 0:  # tiny disks: start in the largest region, run past its end
            fits = np.array([int(np.argmax(lengths))])
        src = data[int(fits[rng.integers(0, len(fits))])]
        slack_pages = max(0, src.length - r.length) // PAGE
        source = src.offset + int(rng.integers(0, slack_pages + 1)) * PAGE
        source = min(source, regions[-1].offset + regions[-1].length - r.length)
        out.append(Region(r.index, r.offset, r.length, DUP, source))
    return out
