"""A repository: config, keys, and typed access to chunks, indexes and manifests."""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import blake3

from storage.engine import keys
from storage.engine.backend import Backend, BackendError, ObjectMissing, ReadsInto
from storage.engine.envelope import (
    KIND_CHUNK,
    KIND_INDEX,
    KIND_MANIFEST,
    Buffer,
    Codec,
    CorruptObject,
    Scratch,
    sealed_bound,
)
from storage.engine.index import DiskIndex, Entry, decode_page
from storage.engine.manifest import Manifest

FORMAT = "backupconsole-repository"
VERSION = 1
CHUNK_SIZE = 4 * 1024 * 1024
PAGE_SPAN = 1024 * 1024 * 1024


class RepositoryError(Exception):
    """The repository cannot be used as asked; the message is for the user."""


def object_key(prefix: str, digest: bytes) -> str:
    hexdigest = digest.hex()
    return f"{prefix}/{hexdigest[:2]}/{hexdigest}"


@dataclass(frozen=True)
class Config:
    id: str
    encryption: bool
    compression_level: int
    chunk_size: int
    page_span: int
    immutability_days: int
    created: str

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "format": FORMAT,
                "version": VERSION,
                "id": self.id,
                "created": self.created,
                "encryption": "aes-256-gcm" if self.encryption else "none",
                "hash": "blake3-keyed" if self.encryption else "blake3",
                "compression": "zstd",
                "compression_level": self.compression_level,
                "chunk_size": self.chunk_size,
                "page_span": self.page_span,
                "immutability_days": self.immutability_days,
            },
            indent=1,
            sort_keys=True,
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Config:
        doc = json.loads(raw)
        if doc.get("format") != FORMAT:
            raise RepositoryError("this is not a backupconsole repository")
        if doc.get("version") != VERSION:
            raise RepositoryError(
                f"repository format version {doc.get('version')} is newer than this release "
                f"reads ({VERSION}); upgrade backupconsole"
            )
        return cls(
            id=doc["id"],
            encryption=doc["encryption"] != "none",
            compression_level=int(doc["compression_level"]),
            chunk_size=int(doc["chunk_size"]),
            page_span=int(doc["page_span"]),
            immutability_days=int(doc.get("immutability_days", 0)),
            created=doc["created"],
        )


class Repository:
    def __init__(self, backend: Backend, config: Config, master: keys.MasterKey | None) -> None:
        self.backend = backend
        self.config = config
        self.codec = Codec(
            hash_key=master.hash_key if master else None,
            enc_key=master.enc_key if master else None,
            level=config.compression_level,
        )
        self._master = master

    # --- lifecycle ---------------------------------------------------------------------------
    @classmethod
    def init(
        cls,
        backend: Backend,
        *,
        passphrase: str | None,
        encryption: bool = True,
        compression_level: int = 1,
        immutability_days: int = 0,
    ) -> Repository:
        if backend.exists("config"):
            raise RepositoryError(f"{backend.describe()} already holds a repository")
        lock_check = getattr(backend, "object_lock_enabled", None)
        if immutability_days and lock_check is not None and not lock_check():
            raise RepositoryError(
                f"immutability needs S3 Object Lock, which {backend.describe()} does not have: "
                "create the bucket with Object Lock enabled"
            )
        if encryption and not passphrase:
            raise RepositoryError("an encrypted repository needs a passphrase")
        config = Config(
            id=secrets.token_hex(16),
            encryption=encryption,
            compression_level=compression_level,
            chunk_size=CHUNK_SIZE,
            page_span=PAGE_SPAN,
            immutability_days=immutability_days,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        master = keys.MasterKey.generate() if encryption else None
        if master is not None and passphrase:
            backend.put(f"keys/{secrets.token_hex(8)}", keys.dumps(keys.wrap(master, passphrase)))
        # config last: a repository without it is not one (an interrupted init can be redone).
        backend.put("config", config.to_json())
        return cls(backend, config, master)

    @classmethod
    def open(cls, backend: Backend, *, passphrase: str | None) -> Repository:
        try:
            config = Config.from_json(backend.get("config"))
        except ObjectMissing:
            raise RepositoryError(f"no repository at {backend.describe()}") from None
        if not config.encryption:
            return cls(backend, config, None)
        if not passphrase:
            raise RepositoryError("this repository is encrypted: give its passphrase")
        for info in backend.list("keys/"):
            try:
                master = keys.unwrap(json.loads(backend.get(info.key)), passphrase)
            except keys.WrongPassphrase:
                continue
            return cls(backend, config, master)
        raise keys.WrongPassphrase("wrong passphrase for this repository")

    def fingerprint(self) -> str:
        """Identifies the key (or, unencrypted, the repository) without revealing it."""
        material = self._master.raw() if self._master else self.config.id.encode()
        digest = blake3.blake3(b"backupconsole-fingerprint" + material).hexdigest()[:32].upper()
        return ":".join(digest[i : i + 4] for i in range(0, len(digest), 4))

    def change_passphrase(self, new_passphrase: str) -> None:
        """Wrap the same master key with a new passphrase; remove the old key files."""
        if self._master is None:
            raise RepositoryError("the repository is not encrypted")
        old = [info.key for info in self.backend.list("keys/")]
        self.backend.put(
            f"keys/{secrets.token_hex(8)}", keys.dumps(keys.wrap(self._master, new_passphrase))
        )
        for key in old:
            self.backend.delete(key)

    def export_key(self) -> dict[str, Any]:
        """The wrapped key document(s): keep a copy apart from the repository."""
        return {
            info.key: json.loads(self.backend.get(info.key)) for info in self.backend.list("keys/")
        }

    # --- objects -----------------------------------------------------------------------------
    def retain_until(self, now: datetime | None = None) -> datetime | None:
        if not self.config.immutability_days:
            return None
        return (now or datetime.now(UTC)) + timedelta(days=self.config.immutability_days)

    def chunk_key(self, digest: bytes) -> str:
        return object_key("chunks", digest)

    def index_key(self, digest: bytes) -> str:
        return object_key("indexes", digest)

    def get_chunk(self, digest: bytes) -> bytes:
        data = self.codec.open(KIND_CHUNK, digest, self.backend.get(self.chunk_key(digest)))
        if self.codec.digest(data) != digest:
            raise CorruptObject(f"chunk {digest.hex()} does not match its digest")
        return data

    def get_chunk_into(
        self, digest: bytes, scratch: Scratch, dest: memoryview | None = None
    ) -> memoryview:
        """``get_chunk`` without allocating: see ``Codec.open_into``."""
        key = self.chunk_key(digest)
        blob: memoryview | None = None
        if isinstance(self.backend, ReadsInto):
            blob = self.backend.read_into(key, scratch.sealed)
        if blob is None:
            blob = memoryview(self.backend.get(key))
        data = self.codec.open_into(KIND_CHUNK, digest, blob, scratch, dest)
        if self.codec.digest(data) != digest:
            raise CorruptObject(f"chunk {digest.hex()} does not match its digest")
        return data

    def blob_key(self, kind: int, digest: bytes) -> str:
        return self.chunk_key(digest) if kind == KIND_CHUNK else self.index_key(digest)

    def keep_if_present(self, key: str, since: datetime) -> bool:
        """True if the object exists and is safe from GC for a writer that started at ``since``.

        An object modified after ``since - 30 min`` is younger than any GC cutoff (start of the
        oldest writer - 1 h) that writer can meet; an older one is touched first.
        """
        try:
            info = self.backend.stat(key)
        except ObjectMissing:
            return False
        if info.modified >= since - timedelta(minutes=30):
            return True
        return self.backend.touch(key)

    def put_blob(
        self,
        kind: int,
        data: Buffer,
        *,
        since: datetime | None = None,
        digest: bytes | None = None,
        timing: Callable[[float, float], None] | None = None,
        scratch: Scratch | None = None,
    ) -> tuple[bytes, int]:
        """Store a content-addressed object; returns (digest, bytes written or 0 if present).

        ``since`` is the writer's start (the GC-safety rule); ``timing`` receives the seconds
        spent computing (hash, compress, encrypt) and in the backend, for bottleneck figures;
        ``scratch`` (one per thread) saves allocating the envelope.
        """
        start = time.perf_counter()
        if digest is None:
            digest = self.codec.digest(data)
        key = self.blob_key(kind, digest)
        hashed = time.perf_counter()
        if self.keep_if_present(key, since or datetime.now(UTC)):
            if timing:
                timing(hashed - start, time.perf_counter() - hashed)
            return digest, 0
        checked = time.perf_counter()
        out: bytearray | memoryview
        if scratch is not None and len(data) <= scratch.size:
            out = scratch.sealed
        else:
            out = bytearray(sealed_bound(len(data)))
        sealed = self.codec.seal_into(kind, digest, data, out)
        sealed_at = time.perf_counter()
        written = self.backend.put(key, sealed, retain_until=self.retain_until())
        if timing:
            timing(
                (hashed - start) + (sealed_at - checked),
                (checked - hashed) + (time.perf_counter() - sealed_at),
            )
        return digest, len(sealed) if written else 0

    def get_index(self, digest: bytes) -> bytes:
        data = self.codec.open(KIND_INDEX, digest, self.backend.get(self.index_key(digest)))
        if self.codec.digest(data) != digest:
            raise CorruptObject(f"index {digest.hex()} does not match its digest")
        return data

    def disk_index(self, hexdigest: str) -> DiskIndex:
        return DiskIndex.decode(self.get_index(bytes.fromhex(hexdigest)))

    def page(self, digest: bytes) -> list[Entry]:
        return decode_page(self.get_index(digest))

    # --- manifests ---------------------------------------------------------------------------
    def write_manifest(self, manifest: Manifest) -> None:
        name = manifest.key.encode()
        sealed = self.codec.seal(KIND_MANIFEST, name, manifest.to_json())
        if not self.backend.put(manifest.key, sealed, retain_until=manifest.immutable_until):
            raise RepositoryError(f"restore point {manifest.id} exists already")

    def read_manifest(self, key: str) -> Manifest:
        raw = self.codec.open(KIND_MANIFEST, key.encode(), self.backend.get(key))
        return Manifest.from_json(raw)

    def manifest_keys(self, vm_key: str | None = None) -> list[str]:
        prefix = f"snapshots/{vm_key}/" if vm_key else "snapshots/"
        return sorted(info.key for info in self.backend.list(prefix))

    def manifests(self, vm_key: str | None = None) -> Iterator[Manifest]:
        for key in self.manifest_keys(vm_key):
            yield self.read_manifest(key)

    def find(self, point_id: str) -> Manifest:
        for key in self.manifest_keys():
            if key.rsplit("/", 1)[-1] == point_id:
                return self.read_manifest(key)
        raise RepositoryError(f"no restore point {point_id} in {self.backend.describe()}")

    # --- writers -----------------------------------------------------------------------------
    @contextmanager
    def writer_registration(self, parent: str | None) -> Iterator[str]:
        """Registers a running writer (GC's cutoff and prune's parent protection read these)."""
        writer_id = secrets.token_hex(8)
        key = f"writers/{writer_id}"
        document = {
            "started": datetime.now(UTC).isoformat(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "parent": parent,
        }
        self.backend.put(key, json.dumps(document).encode())
        try:
            yield writer_id
        finally:
            # A stale registration only delays GC; it expires (see the format doc).
            with suppress(BackendError):
                self.backend.delete(key)

    def writers(self) -> list[dict[str, Any]]:
        out = []
        for info in self.backend.list("writers/"):
            try:
                out.append(json.loads(self.backend.get(info.key)))
            except ObjectMissing:
                continue
        return out
