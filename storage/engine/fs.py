"""Filesystem backend: a directory tree, written with temporary name + link, fsynced."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from storage.engine.backend import (
    BackendError,
    ObjectInfo,
    ObjectLocked,
    ObjectMissing,
    StorageFull,
)
from storage.engine.directio import read_whole

_RETAIN_XATTR = "user.backupconsole.retain_until"


def _error(exc: OSError, what: str) -> BackendError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull(f"No space left on the repository's filesystem while {what}.")
    return BackendError(f"{what}: {exc.strerror or exc}")


def _syncfs(path: Path) -> None:
    """Flush one filesystem (syncfs(2)); falls back to sync(2) where libc lacks it."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc is not None and _libc.syncfs(fd) == 0:
            return
        os.sync()
    finally:
        os.close(fd)


try:
    _libc: ctypes.CDLL | None = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
except OSError:
    _libc = None

_SYNC_FILE_RANGE_WRITE = 2
_sync_file_range = getattr(_libc, "sync_file_range", None)
if _sync_file_range is not None:
    _sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]


def start_writeback(fd: int, offset: int = 0, length: int = 0) -> None:
    """Start writing a file's dirty pages to disk without waiting (sync_file_range(2)).

    Not durability (the later fsync/syncfs gives that): it overlaps the disk writes with the
    work still to do, so the final flush waits for little instead of every byte. ``length`` 0
    means to the end of the file.
    """
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


# Content-addressed objects: many are written, and losing an unreferenced one is harmless, so
# they are synced in one syncfs before the manifest that references them (see flush()).
_BATCHED = ("chunks/", "indexes/")


class FilesystemBackend:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def describe(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        if key.startswith("/") or ".." in key.split("/"):
            raise BackendError(f"invalid object key {key!r}")
        return self.root / key

    def put(
        self,
        key: str,
        data: bytes | bytearray | memoryview,
        *,
        if_absent: bool = True,
        retain_until: datetime | None = None,
    ) -> bool:
        path = self._path(key)
        if if_absent and path.exists():
            return False
        tmp = path.parent / f".tmp-{path.name}-{secrets.token_hex(6)}"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                view = memoryview(data)
                done = 0
                while done < len(view):
                    done += os.pwrite(fd, view[done:], done)
                if key.startswith(_BATCHED):
                    # Through the page cache, unlike a restore's writes: a restore, verify or
                    # copy soon after finds them there (bench/README.md). Writeback starts
                    # now, so the flush before the manifest waits for little.
                    start_writeback(fd)
                else:
                    os.fsync(fd)
            finally:
                os.close(fd)
            if retain_until is not None:
                self._retain(tmp, retain_until)
            if if_absent:
                try:
                    os.link(tmp, path)  # fails if present: never overwrites
                except FileExistsError:
                    return False
                finally:
                    tmp.unlink(missing_ok=True)
            else:
                os.replace(tmp, path)
            if not key.startswith(_BATCHED):
                self._fsync_dir(path.parent)
            return True
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise _error(exc, f"writing {key}") from exc

    def _retain(self, path: Path, until: datetime) -> None:
        os.chmod(path, 0o444)
        # Without xattrs the engine still refuses deletes from the manifest's immutable_until.
        with contextlib.suppress(OSError):
            os.setxattr(path, _RETAIN_XATTR, until.astimezone(UTC).isoformat().encode())

    @staticmethod
    def _fsync_dir(path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectMissing(f"{key} is missing from {self.root}") from None
        except OSError as exc:
            raise _error(exc, f"reading {key}") from exc

    def read_into(self, key: str, buffer: memoryview) -> memoryview | None:
        """The object read into ``buffer``; None if it is larger than ``buffer``.

        Directly (directio) when ``buffer`` is aligned: a restore reads each chunk once.
        """
        path = self._path(key)
        try:
            size = read_whole(path, buffer)
        except FileNotFoundError:
            raise ObjectMissing(f"{key} is missing from {self.root}") from None
        except OSError as exc:
            raise _error(exc, f"reading {key}") from exc
        if size is not None:
            return buffer[:size]
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise ObjectMissing(f"{key} is missing from {self.root}") from None
        except OSError as exc:
            raise _error(exc, f"reading {key}") from exc
        try:
            size = os.fstat(fd).st_size
            if size > len(buffer):
                return None
            view = buffer[:size]
            done = 0
            while done < size:
                got = os.readv(fd, [view[done:]])
                if not got:
                    break
                done += got
            return view[:done]
        except OSError as exc:
            raise _error(exc, f"reading {key}") from exc
        finally:
            os.close(fd)

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def stat(self, key: str) -> ObjectInfo:
        try:
            st = self._path(key).stat()
        except FileNotFoundError:
            raise ObjectMissing(f"{key} is missing from {self.root}") from None
        return ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def touch(self, key: str) -> bool:
        try:
            os.utime(self._path(key))
            return True
        except FileNotFoundError:
            return False
        except PermissionError:
            # Read-only (immutable) objects: utime needs ownership, which we have as the writer;
            # if not, the object is retained anyway and GC cannot remove it.
            return True

    def retained_until(self, key: str) -> datetime | None:
        try:
            raw = os.getxattr(self._path(key), _RETAIN_XATTR)
        except OSError:
            return None
        return datetime.fromisoformat(raw.decode())

    def delete(self, key: str) -> None:
        until = self.retained_until(key)
        if until is not None and until > datetime.now(UTC):
            raise ObjectLocked(f"{key} is immutable until {until:%Y-%m-%d %H:%M} UTC")
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise _error(exc, f"deleting {key}") from exc

    def flush(self) -> None:
        if self.root.exists():
            try:
                _syncfs(self.root)
            except OSError as exc:
                raise _error(exc, "flushing the repository to disk") from exc

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        base = self._path(prefix.rstrip("/")) if prefix else self.root
        if not base.exists():
            return
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                if name.startswith(".tmp-"):
                    continue
                full = Path(dirpath) / name
                try:
                    st = full.stat()
                except FileNotFoundError:
                    continue
                key = full.relative_to(self.root).as_posix()
                yield ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))
