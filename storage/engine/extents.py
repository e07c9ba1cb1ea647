"""Range arithmetic on half-open byte ranges ``(start, end)``: normalize, subtract, split."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

Range = tuple[int, int]


def normalize(ranges: Iterable[Range], *, limit: int | None = None) -> list[Range]:
    """Sorted, merged (touching ranges joined), empty ones dropped, clipped to ``[0, limit)``."""
    out: list[Range] = []
    for start, end in sorted(ranges):
        if limit is not None:
            start, end = max(start, 0), min(end, limit)
        if end <= start:
            continue
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def from_lengths(extents: Iterable[tuple[int, int]]) -> list[Range]:
    """``[(offset, length), ...]`` (change-tracking style) to ranges."""
    return [(offset, offset + length) for offset, length in extents]


def split_aligned(ranges: Iterable[Range], size: int) -> Iterator[Range]:
    """Cut ranges at multiples of ``size``, so no piece crosses an aligned window."""
    for start, end in ranges:
        while start < end:
            boundary = (start // size + 1) * size
            stop = min(end, boundary)
            yield start, stop
            start = stop


def subtract(ranges: list[Range], holes: list[Range]) -> list[Range]:
    """``ranges`` minus ``holes``; both normalized."""
    out: list[Range] = []
    j = 0
    for start, end in ranges:
        cursor = start
        while j < len(holes) and holes[j][1] <= cursor:
            j += 1
        k = j
        while k < len(holes) and holes[k][0] < end:
            h_start, h_end = holes[k]
            if h_start > cursor:
                out.append((cursor, h_start))
            cursor = max(cursor, h_end)
            k += 1
        if cursor < end:
            out.append((cursor, end))
    return out


def total(ranges: Iterable[Range]) -> int:
    return sum(end - start for start, end in ranges)
