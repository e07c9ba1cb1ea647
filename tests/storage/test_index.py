"""Property tests for the range arithmetic and the index overlay (hypothesis)."""

from __future__ import annotations

import itertools
import os
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from storage.engine.envelope import HEADER, KIND_CHUNK, Codec
from storage.engine.extents import normalize, split_aligned, subtract, total
from storage.engine.index import DiskIndex, Entry, decode_page, encode_page, overlay, split_by_page

SIZE = 1 << 16
ranges = st.lists(
    st.tuples(st.integers(0, SIZE), st.integers(0, 4096)).map(lambda t: (t[0], t[0] + t[1])),
    max_size=30,
)


def _bits(rs):
    return {i for start, end in rs for i in range(start, end)}


@given(ranges)
def test_normalize_keeps_the_same_bytes_sorted_and_disjoint(rs):
    out = normalize(rs, limit=SIZE)
    assert _bits(out) == {i for i in _bits(rs) if i < SIZE}
    assert all(a[1] < b[0] for a, b in itertools.pairwise(out))


@given(ranges, ranges)
def test_subtract_is_set_difference(a, b):
    a, b = normalize(a), normalize(b)
    assert _bits(subtract(a, b)) == _bits(a) - _bits(b)


@given(ranges, st.sampled_from([512, 4096, 65536]))
def test_split_aligned_never_crosses_a_window(rs, size):
    pieces = list(split_aligned(normalize(rs), size))
    assert total(pieces) == total(normalize(rs))
    assert all(start // size == (end - 1) // size for start, end in pieces)


writes = st.lists(
    st.tuples(st.integers(0, SIZE - 1), st.integers(1, 5000), st.binary(min_size=1, max_size=1)),
    min_size=1,
    max_size=25,
)


@settings(max_examples=150)
@given(writes, st.sampled_from([4096, 8192, SIZE]))
def test_overlaying_changes_reads_back_like_the_disk(changes, span):
    """A model disk vs entries built by overlays: every byte must agree."""
    disk = bytearray(SIZE)
    chunks: dict[bytes, bytes] = {}
    entries: list[Entry] = []
    for n, (offset, length, fill) in enumerate(changes):
        end = min(offset + length, SIZE)
        data = fill * (end - offset)
        disk[offset:end] = data
        digest = n.to_bytes(32, "little")
        chunks[digest] = b"\xee" * 7 + data  # data at an offset inside its chunk
        entries = overlay(entries, [(offset, end)], [Entry(offset, end - offset, 7, digest)])
    rebuilt = bytearray(SIZE)
    for page in split_by_page(entries, span).values():
        decoded = decode_page(encode_page(page))
        assert decoded == page
        for e in decoded:
            rebuilt[e.offset : e.end] = chunks[e.digest][e.chunk_offset : e.chunk_offset + e.length]
    assert rebuilt == disk


def test_disk_index_byte_layout_matches_the_format_document():
    index = DiskIndex(
        size=3 * 2**30 + 1, span=2**30, pages=(b"\1" * 32, bytes(32), b"\2" * 32, bytes(32))
    )
    raw = index.encode()
    assert raw[:4] == b"BCI1"
    assert struct.unpack_from("<QII", raw, 4) == (3 * 2**30 + 1, 2**30, 4)
    assert raw[20:52] == b"\1" * 32 and len(raw) == 20 + 4 * 32
    assert DiskIndex.decode(raw) == index
    page = encode_page([Entry(5, 6, 7, b"\3" * 32)])
    assert page == b"BCP1" + struct.pack("<I", 1) + struct.pack("<QII", 5, 6, 7) + b"\3" * 32


def test_envelope_header_layout_and_compression_rule():
    codec = Codec(hash_key=None, enc_key=None, level=3)
    text = b"log line\n" * 1000
    sealed = codec.seal(KIND_CHUNK, codec.digest(text), text)
    assert HEADER.unpack_from(sealed) == (b"BCO1", KIND_CHUNK, 0x01, len(text))
    noise = os.urandom(4096)
    raw = codec.seal(KIND_CHUNK, codec.digest(noise), noise)
    assert HEADER.unpack_from(raw)[2] == 0 and raw[HEADER.size :] == noise  # stored as is
    keyed = Codec(hash_key=b"k" * 32, enc_key=b"e" * 32)
    sealed = keyed.seal(KIND_CHUNK, keyed.digest(text), text)
    assert HEADER.unpack_from(sealed)[2] == 0x03 and text[:16] not in sealed
    assert keyed.open(KIND_CHUNK, keyed.digest(text), sealed) == text
