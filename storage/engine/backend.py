"""The object store under a repository: one small interface, a filesystem and an S3 backend.

Keys are ``/``-separated names relative to the repository root (``chunks/ab/ab12…``). Writes are
atomic and idempotent: ``put`` with ``if_absent`` never overwrites, and an interrupted write leaves
no partial object under the final name.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable


class BackendError(Exception):
    """A storage operation failed; the message says what and where, for the user."""


class ObjectMissing(BackendError):
    """The object does not exist."""


class ObjectLocked(BackendError):
    """The object is under retention (immutability) and cannot be deleted yet."""


class StorageFull(BackendError):
    """The backend has no space left."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime  # aware, UTC


class Backend(Protocol):
    def describe(self) -> str:
        """Where this is, for messages (a path or s3://bucket/prefix)."""
        ...

    def put(
        self,
        key: str,
        data: bytes | bytearray | memoryview,
        *,
        if_absent: bool = True,
        retain_until: datetime | None = None,
    ) -> bool:
        """Store ``data``; True if written, False if ``if_absent`` and it already existed."""
        ...

    def get(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def stat(self, key: str) -> ObjectInfo: ...

    def touch(self, key: str) -> bool:
        """Make the object's modification time now; False if it does not exist."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object; ObjectLocked while retained; no error if already gone."""
        ...

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix`` (a directory-like prefix ending in /)."""
        ...

    def flush(self) -> None:
        """Make every object put so far durable (called before a manifest commits them)."""
        ...


@runtime_checkable
class ReadsInto(Protocol):
    """A backend that can read an object into a caller's buffer (no allocation per object)."""

    def read_into(self, key: str, buffer: memoryview) -> memoryview | None:
        """The object in ``buffer``; None if it does not fit (then use ``get``)."""
        ...
