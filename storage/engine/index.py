"""Disk indexes and index pages (docs/repository-format.md, "Disk index").

A page lists sorted, non-overlapping entries ``(offset, length, chunk_offset, digest)``: disk bytes
``[offset, offset+length)`` are bytes ``[chunk_offset, chunk_offset+length)`` of that chunk. What no
entry covers reads as zeros.
"""

from __future__ import annotations

import itertools
import struct
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass

from storage.engine.extents import Range, subtract

PAGE_MAGIC, DISK_MAGIC = b"BCP1", b"BCI1"
_PAGE_HEAD = struct.Struct("<4sI")
_ENTRY = struct.Struct("<QII32s")
_DISK_HEAD = struct.Struct("<4sQII")
ZERO_DIGEST = bytes(32)


class IndexError_(Exception):
    """An index or page is malformed."""


@dataclass(frozen=True, order=True)
class Entry:
    offset: int
    length: int
    chunk_offset: int
    digest: bytes

    @property
    def end(self) -> int:
        return self.offset + self.length


def encode_page(entries: list[Entry]) -> bytes:
    parts = [_PAGE_HEAD.pack(PAGE_MAGIC, len(entries))]
    parts.extend(_ENTRY.pack(e.offset, e.length, e.chunk_offset, e.digest) for e in entries)
    return b"".join(parts)


def decode_page(data: bytes) -> list[Entry]:
    if len(data) < _PAGE_HEAD.size:
        raise IndexError_("index page is truncated")
    magic, count = _PAGE_HEAD.unpack_from(data)
    if magic != PAGE_MAGIC or len(data) != _PAGE_HEAD.size + count * _ENTRY.size:
        raise IndexError_("index page is malformed")
    entries = [Entry(*fields) for fields in _ENTRY.iter_unpack(data[_PAGE_HEAD.size :])]
    for before, after in itertools.pairwise(entries):
        if after.offset < before.end:
            raise IndexError_("index page entries overlap")
    return entries


@dataclass(frozen=True)
class DiskIndex:
    size: int
    span: int
    pages: tuple[bytes, ...]  # digest per page; ZERO_DIGEST for a page of only zeros

    def encode(self) -> bytes:
        return _DISK_HEAD.pack(DISK_MAGIC, self.size, self.span, len(self.pages)) + b"".join(
            self.pages
        )

    @classmethod
    def decode(cls, data: bytes) -> DiskIndex:
        if len(data) < _DISK_HEAD.size:
            raise IndexError_("disk index is truncated")
        magic, size, span, count = _DISK_HEAD.unpack_from(data)
        body = data[_DISK_HEAD.size :]
        if magic != DISK_MAGIC or span <= 0 or len(body) != 32 * count:
            raise IndexError_("disk index is malformed")
        if count != -(-size // span):
            raise IndexError_("disk index page count does not match the disk size")
        return cls(size, span, tuple(body[i : i + 32] for i in range(0, len(body), 32)))

    def page_range(self, number: int) -> Range:
        start = number * self.span
        return start, min(start + self.span, self.size)


def cut(entries: list[Entry], holes: list[Range]) -> list[Entry]:
    """Entries with the byte ranges in ``holes`` (normalized) removed; pieces keep their chunk."""
    starts = [start for start, _ in holes]
    ends = [end for _, end in holes]
    out: list[Entry] = []
    for entry in entries:
        # Only the holes that can touch this entry: ending after its start, starting before its end.
        nearby = holes[bisect_right(ends, entry.offset) : bisect_left(starts, entry.end)]
        out.extend(
            _piece(entry, start, end)
            for start, end in subtract([(entry.offset, entry.end)], nearby)
        )
    return out


def _piece(entry: Entry, start: int, end: int) -> Entry:
    return Entry(start, end - start, entry.chunk_offset + (start - entry.offset), entry.digest)


def overlay(old: list[Entry], replaced: list[Range], new: Iterable[Entry]) -> list[Entry]:
    """The page after a change: ``replaced`` ranges now hold ``new`` entries (zeros elsewhere)."""
    return sorted([*cut(old, replaced), *new])


def split_by_page(entries: Iterable[Entry], span: int) -> dict[int, list[Entry]]:
    """Group entries by page number, cutting any entry that crosses a page boundary."""
    pages: dict[int, list[Entry]] = {}
    for entry in entries:
        start = entry.offset
        while start < entry.end:
            number = start // span
            stop = min(entry.end, (number + 1) * span)
            pages.setdefault(number, []).append(_piece(entry, start, stop))
            start = stop
    for items in pages.values():
        items.sort()
    return pages
