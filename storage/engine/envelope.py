"""The envelope around every stored chunk, index and manifest (docs/repository-format.md).

    magic b"BCO1" | kind u8 | flags u8 | plain_length u32 | body

Encrypted bodies use a per-object key derived from the object's name, with a fixed nonce: a key
never encrypts two different plaintexts, because content-addressed names differ whenever content
differs and manifests are written once under a random name.

``seal_into`` and ``open_into`` work in a caller's reusable ``Scratch`` buffers: a fresh
multi-MiB buffer per chunk costs page faults and allocator churn that, across threads, came to
a sixth of a backup's CPU time (bench/README.md).
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass

import blake3
import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from storage.engine.directio import ALIGN, aligned_buffer

MAGIC = b"BCO1"
HEADER = struct.Struct("<4sBBI")
KIND_CHUNK, KIND_INDEX, KIND_MANIFEST = 1, 2, 3
FLAG_ZSTD, FLAG_ENCRYPTED = 0x01, 0x02
TAG = 16  # AES-GCM tag, after the ciphertext
_NONCE = bytes(12)
_local = threading.local()

Buffer = bytes | bytearray | memoryview


def _compressor(level: int) -> zstandard.ZstdCompressor:
    """One compressor per thread and level: creating one costs more than a small chunk."""
    cache: dict[int, zstandard.ZstdCompressor] = _local.__dict__.setdefault("compressors", {})
    if level not in cache:
        cache[level] = zstandard.ZstdCompressor(level=level)
    return cache[level]


def _decompressor() -> zstandard.ZstdDecompressor:
    if not hasattr(_local, "decompressor"):
        _local.decompressor = zstandard.ZstdDecompressor()
    return _local.decompressor  # type: ignore[no-any-return]


def sealed_bound(length: int) -> int:
    """The largest envelope of ``length`` plaintext bytes (compression is kept only if smaller)."""
    return HEADER.size + length + TAG


class Scratch:
    """Reusable buffers for objects of up to ``size`` plaintext bytes; one per thread.

    ``sealed`` holds an envelope being written or read; opening one also needs ``payload`` (a
    decrypted body) and ``plain`` (a decompressed body), made on first use.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        # Aligned, and a whole number of blocks: objects go to and from disk directly.
        self.sealed = aligned_buffer(-(-sealed_bound(size) // ALIGN) * ALIGN)
        self._payload: bytearray | None = None
        self._plain: bytearray | None = None

    @property
    def payload(self) -> bytearray:
        if self._payload is None:
            self._payload = bytearray(self.size)
        return self._payload

    @property
    def plain(self) -> bytearray:
        if self._plain is None:
            self._plain = bytearray(self.size)
        return self._plain


class CorruptObject(Exception):
    """An object fails its checks (bad header, tag, length or digest)."""


@dataclass(frozen=True)
class Codec:
    """Seals and opens envelopes for one repository (its keys and compression level)."""

    hash_key: bytes | None  # None: unencrypted repository (plain BLAKE3 digests)
    enc_key: bytes | None
    level: int = 1

    def digest(self, data: Buffer) -> bytes:
        if self.hash_key is None:
            return blake3.blake3(data, max_threads=1).digest()
        return blake3.blake3(data, key=self.hash_key, max_threads=1).digest()

    def _object_key(self, kind: int, name: bytes) -> bytes:
        assert self.enc_key is not None
        return blake3.blake3(b"obj" + bytes([kind]) + name, key=self.enc_key).digest()

    def seal(self, kind: int, name: bytes, data: Buffer) -> bytes:
        return bytes(self.seal_into(kind, name, data, bytearray(sealed_bound(len(data)))))

    def seal_into(
        self, kind: int, name: bytes, data: Buffer, out: bytearray | memoryview
    ) -> memoryview:
        """The envelope of ``data``, written into ``out`` (at least ``sealed_bound`` long)."""
        length = len(data)
        flags = 0
        payload: Buffer = data
        compressed = _compressor(self.level).compress(data)
        # Only keep compression that pays: random data is stored as is (and decodes faster).
        if len(compressed) < length - length // 16:
            payload, flags = compressed, FLAG_ZSTD
        if self.enc_key is not None:
            flags |= FLAG_ENCRYPTED
        view = memoryview(out)
        HEADER.pack_into(out, 0, MAGIC, kind, flags, length)
        end = HEADER.size + len(payload)
        if self.enc_key is None:
            view[HEADER.size : end] = payload
            return view[:end]
        aad = bytes(view[: HEADER.size]) + name
        AESGCM(self._object_key(kind, name)).encrypt_into(
            _NONCE, payload, aad, view[HEADER.size : end + TAG]
        )
        return view[: end + TAG]

    def _header(self, kind: int, blob: Buffer) -> tuple[int, int]:
        if len(blob) < HEADER.size:
            raise CorruptObject("object is truncated")
        magic, got_kind, flags, length = HEADER.unpack_from(blob)
        if magic != MAGIC or got_kind != kind:
            raise CorruptObject("object has a wrong header")
        if flags & FLAG_ENCRYPTED:
            if self.enc_key is None:
                raise CorruptObject("object is encrypted but the repository is not")
        elif self.enc_key is not None:
            raise CorruptObject("object is not encrypted in an encrypted repository")
        return flags, length

    def open(self, kind: int, name: bytes, blob: bytes) -> bytes:
        flags, length = self._header(kind, blob)
        body: bytes = blob[HEADER.size :]
        if flags & FLAG_ENCRYPTED:
            try:
                body = AESGCM(self._object_key(kind, name)).decrypt(
                    _NONCE, body, blob[: HEADER.size] + name
                )
            except InvalidTag:
                raise CorruptObject("object fails its authentication tag") from None
        if flags & FLAG_ZSTD:
            try:
                body = _decompressor().decompress(body, max_output_size=length)
            except zstandard.ZstdError as exc:
                raise CorruptObject(f"object does not decompress: {exc}") from None
        if len(body) != length:
            raise CorruptObject("object has a wrong length")
        return body

    def open_into(
        self,
        kind: int,
        name: bytes,
        blob: memoryview,
        scratch: Scratch,
        dest: memoryview | None = None,
    ) -> memoryview:
        """The plaintext of ``blob`` (which may be ``scratch.sealed``), without allocating.

        It lands in ``dest[:length]`` when ``dest`` is long enough (a restore's window buffer:
        no copy after), else in ``scratch``; the view is valid until either is used again.
        Same checks as ``open``.
        """
        flags, length = self._header(kind, blob)
        if length > scratch.size:
            return memoryview(self.open(kind, name, bytes(blob)))
        final = dest[:length] if dest is not None and len(dest) >= length else None
        body = blob[HEADER.size :]
        if flags & FLAG_ENCRYPTED:
            if len(body) < TAG:
                raise CorruptObject("object is truncated")
            to = final if final is not None and not flags & FLAG_ZSTD else scratch.payload
            out = memoryview(to)[: len(body) - TAG]
            try:
                AESGCM(self._object_key(kind, name)).decrypt_into(
                    _NONCE, body, bytes(blob[: HEADER.size]) + name, out
                )
            except InvalidTag:
                raise CorruptObject("object fails its authentication tag") from None
            except ValueError:  # a body longer than any this repository writes
                raise CorruptObject("object has a wrong length") from None
            body = out
        if flags & FLAG_ZSTD:
            to = final if final is not None else memoryview(scratch.plain)[:length]
            body = _decompress_into(body, to)
        if len(body) != length:
            raise CorruptObject("object has a wrong length")
        return body


def _decompress_into(frame: memoryview, out: memoryview) -> memoryview:
    """Decompress one zstd frame into ``out``; it must fill ``out`` exactly."""
    try:
        reader = _decompressor().stream_reader(frame, read_size=len(frame))
        done = 0
        while done < len(out):
            got = reader.readinto(out[done:])
            if not got:
                break
            done += got
        if done != len(out) or reader.read(1):
            raise CorruptObject("object has a wrong length")
    except zstandard.ZstdError as exc:
        raise CorruptObject(f"object does not decompress: {exc}") from None
    return out
