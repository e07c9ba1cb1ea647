"""The envelope around every stored chunk, index and manifest (docs/repository-format.md).

    magic b"BCO1" | kind u8 | flags u8 | plain_length u32 | body

Encrypted bodies use a per-object key derived from the object's name, with a fixed nonce: a key
never encrypts two different plaintexts, because content-addressed names differ whenever content
differs and manifests are written once under a random name.
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass

import blake3
import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"BCO1"
HEADER = struct.Struct("<4sBBI")
KIND_CHUNK, KIND_INDEX, KIND_MANIFEST = 1, 2, 3
FLAG_ZSTD, FLAG_ENCRYPTED = 0x01, 0x02
_NONCE = bytes(12)
_local = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    """One compressor per thread and level: creating one costs more than a small chunk."""
    cache: dict[int, zstandard.ZstdCompressor] = _local.__dict__.setdefault("compressors", {})
    if level not in cache:
        cache[level] = zstandard.ZstdCompressor(level=level)
    return cache[level]


class CorruptObject(Exception):
    """An object fails its checks (bad header, tag, length or digest)."""


@dataclass(frozen=True)
class Codec:
    """Seals and opens envelopes for one repository (its keys and compression level)."""

    hash_key: bytes | None  # None: unencrypted repository (plain BLAKE3 digests)
    enc_key: bytes | None
    level: int = 1

    def digest(self, data: bytes | memoryview) -> bytes:
        if self.hash_key is None:
            return blake3.blake3(data, max_threads=1).digest()
        return blake3.blake3(data, key=self.hash_key, max_threads=1).digest()

    def _object_key(self, kind: int, name: bytes) -> bytes:
        assert self.enc_key is not None
        return blake3.blake3(b"obj" + bytes([kind]) + name, key=self.enc_key).digest()

    def seal(self, kind: int, name: bytes, data: bytes | memoryview) -> bytes:
        flags = 0
        payload: bytes | memoryview = data
        compressed = _compressor(self.level).compress(data)
        # Only keep compression that pays: random data is stored as is (and decodes faster).
        if len(compressed) < len(data) - len(data) // 16:
            payload, flags = compressed, FLAG_ZSTD
        if self.enc_key is not None:
            flags |= FLAG_ENCRYPTED
            header = HEADER.pack(MAGIC, kind, flags, len(data))
            body = AESGCM(self._object_key(kind, name)).encrypt(
                _NONCE, bytes(payload), header + name
            )
            return header + body
        return HEADER.pack(MAGIC, kind, flags, len(data)) + bytes(payload)

    def open(self, kind: int, name: bytes, blob: bytes) -> bytes:
        if len(blob) < HEADER.size:
            raise CorruptObject("object is truncated")
        magic, got_kind, flags, length = HEADER.unpack_from(blob)
        if magic != MAGIC or got_kind != kind:
            raise CorruptObject("object has a wrong header")
        body: bytes = blob[HEADER.size :]
        if flags & FLAG_ENCRYPTED:
            if self.enc_key is None:
                raise CorruptObject("object is encrypted but the repository is not")
            try:
                body = AESGCM(self._object_key(kind, name)).decrypt(
                    _NONCE, body, blob[: HEADER.size] + name
                )
            except InvalidTag:
                raise CorruptObject("object fails its authentication tag") from None
        elif self.enc_key is not None:
            raise CorruptObject("object is not encrypted in an encrypted repository")
        if flags & FLAG_ZSTD:
            try:
                body = zstandard.ZstdDecompressor().decompress(body, max_output_size=length)
            except zstandard.ZstdError as exc:
                raise CorruptObject(f"object does not decompress: {exc}") from None
        if len(body) != length:
            raise CorruptObject("object has a wrong length")
        return body
