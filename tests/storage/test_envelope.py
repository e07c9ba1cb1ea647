"""The envelope's buffer-reusing paths (seal_into, open_into) against the allocating ones."""

from __future__ import annotations

import os
import random

import pytest

from storage.engine.envelope import (
    FLAG_ENCRYPTED,
    FLAG_ZSTD,
    HEADER,
    KIND_CHUNK,
    Codec,
    CorruptObject,
    Scratch,
    sealed_bound,
)

SIZE = 256 * 1024
KEYS = {"encrypted": (os.urandom(32), os.urandom(32)), "plain": (None, None)}
TEXT = b"".join(b"%d INFO request %d served\n" % (i, i * 31 % 977) for i in range(20000))[:SIZE]
DATA = {"compressible": TEXT, "random": random.Random(3).randbytes(SIZE)}


def _codec(keys: str) -> Codec:
    hash_key, enc_key = KEYS[keys]
    return Codec(hash_key=hash_key, enc_key=enc_key, level=1)


@pytest.mark.parametrize("keys", KEYS)
@pytest.mark.parametrize("content", DATA)
def test_seal_into_and_open_into_agree_with_seal_and_open(keys, content):
    codec, data = _codec(keys), DATA[content]
    name = codec.digest(data)
    sealed = codec.seal(KIND_CHUNK, name, data)
    scratch = Scratch(SIZE)
    into = codec.seal_into(KIND_CHUNK, name, memoryview(bytearray(data)), scratch.sealed)
    assert bytes(into) == sealed  # same bytes on disk whichever path wrote them
    flags = HEADER.unpack_from(sealed)[2]
    assert bool(flags & FLAG_ZSTD) == (content == "compressible")
    assert bool(flags & FLAG_ENCRYPTED) == (keys == "encrypted")
    assert codec.open(KIND_CHUNK, name, sealed) == data
    assert bytes(codec.open_into(KIND_CHUNK, name, memoryview(sealed), scratch)) == data
    # Into a destination long enough: the plaintext lands there.
    dest = memoryview(bytearray(SIZE + 100))
    opened = codec.open_into(KIND_CHUNK, name, memoryview(sealed), scratch, dest)
    assert bytes(opened) == data
    if keys == "encrypted" or content == "compressible":
        assert opened.obj is dest.obj and bytes(dest[:SIZE]) == data
    # Too short a destination is not used.
    short = memoryview(bytearray(SIZE - 1))
    opened = codec.open_into(KIND_CHUNK, name, memoryview(sealed), scratch, short)
    assert bytes(opened) == data and opened.obj is not short.obj


@pytest.mark.parametrize("keys", KEYS)
def test_open_into_refuses_what_open_refuses(keys):
    codec, data = _codec(keys), TEXT
    name = codec.digest(data)
    sealed = bytearray(codec.seal(KIND_CHUNK, name, data))
    scratch = Scratch(SIZE)
    damaged = bytearray(sealed)
    damaged[len(damaged) // 2] ^= 0x01
    truncated = sealed[: len(sealed) - 7]
    longer = bytearray(sealed)
    HEADER.pack_into(longer, 0, b"BCO1", KIND_CHUNK, HEADER.unpack_from(sealed)[2], SIZE + 1)
    bad_ones = [truncated, longer, sealed[:5]]
    if keys == "encrypted":  # unencrypted, a flipped bit is found by the digest check instead
        bad_ones.append(damaged)
    for bad in bad_ones:
        with pytest.raises(CorruptObject):
            codec.open(KIND_CHUNK, name, bytes(bad))
        with pytest.raises(CorruptObject):
            codec.open_into(KIND_CHUNK, name, memoryview(bad), scratch)


def test_an_object_larger_than_the_scratch_still_opens():
    codec = _codec("encrypted")
    data = TEXT * 2
    name = codec.digest(data)
    sealed = codec.seal(KIND_CHUNK, name, data)
    assert bytes(codec.open_into(KIND_CHUNK, name, memoryview(sealed), Scratch(SIZE))) == data
    assert len(sealed) <= sealed_bound(len(data))
