"""Restore targets: a new sparse raw file or a block device, written by runs of data.

Whole aligned blocks are written with direct I/O where the filesystem or device allows it
(``directio``); what is not aligned (the edges of a run) goes through the page cache on a
second descriptor. The two never share a block, and the final fsync covers both. Without direct
I/O every byte is written buffered and its writeback started at once, so the final fsync waits
for little.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from storage.engine.directio import ALIGN, is_aligned, open_direct
from storage.engine.fs import start_writeback

ZERO_BLOCK = 64 * 1024  # a sparse file gets no write for an aligned all-zero block of this size
_ZEROS = bytes(ZERO_BLOCK)


def is_block_device(path: str) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except FileNotFoundError:
        return False


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    done = 0
    while done < len(data):
        done += os.pwrite(fd, data[done:], offset + done)


class Target:
    """One open restore target, shared by threads; each process opens its own (``create``
    only once)."""

    def __init__(self, path: str, *, create: bool = False, size: int = 0) -> None:
        self.path = path
        self.device = is_block_device(path)
        flags = os.O_WRONLY
        if create and not self.device:
            flags |= os.O_CREAT | os.O_TRUNC
        self.fd = os.open(path, flags, 0o600)
        if create and not self.device:
            os.ftruncate(self.fd, size)
        self.direct_fd = open_direct(path, os.O_WRONLY)
        self.direct = self.direct_fd is not None

    def write(self, buffer: memoryview, base: int, start: int, end: int) -> int:
        """Write disk bytes ``[start, end)``, held in ``buffer`` from ``start - base``.

        ``buffer`` is page-aligned at ``base`` (``directio.aligned_buffer``), a multiple of
        ``ALIGN``. On a sparse file, aligned all-zero blocks are skipped (they stay holes);
        a device holds old data, so there every byte is written. Returns the bytes written.
        """
        direct = self.direct and is_aligned(buffer)
        if self.device:
            self._run(buffer, base, start, end, direct)
            return end - start
        written, pos, run = 0, start, -1
        while pos < end:
            step = min(ZERO_BLOCK - pos % ZERO_BLOCK, end - pos)
            # bytes.startswith compares with memcmp; memoryview == bytes goes item by item.
            zero = _ZEROS.startswith(buffer[pos - base : pos - base + step])
            if zero and run >= 0:
                self._run(buffer, base, run, pos, direct)
                written += pos - run
                run = -1
            elif not zero and run < 0:
                run = pos
            pos += step
        if run >= 0:
            self._run(buffer, base, run, end, direct)
            written += end - run
        return written

    def _run(self, buffer: memoryview, base: int, start: int, end: int, direct: bool) -> None:
        low = -(-start // ALIGN) * ALIGN
        high = end // ALIGN * ALIGN
        fd = self.direct_fd if direct and self.direct else None
        if fd is None or high <= low:
            _pwrite_all(self.fd, buffer[start - base : end - base], start)
            return
        if start < low:
            _pwrite_all(self.fd, buffer[start - base : low - base], start)
        if end > high:
            _pwrite_all(self.fd, buffer[high - base : end - base], high)
        done = low
        while done < high:
            try:
                done += os.pwrite(fd, buffer[done - base : high - base], done)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                # Alignment this device does not accept: the page cache from now on (the
                # descriptor stays open until close(): other threads may be using it).
                self.direct = False
                _pwrite_all(self.fd, buffer[done - base : high - base], done)
                return

    def written(self, start: int, end: int) -> None:
        """A window is done: start the writeback of what went through the page cache."""
        if not self.direct:
            start_writeback(self.fd, start, end - start)

    def sync(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        if self.direct_fd is not None:
            os.close(self.direct_fd)
            self.direct_fd = None
        os.close(self.fd)


@contextmanager
def new_file(target: Path) -> Iterator[Path]:
    """Where to write what becomes the new file ``target``: a partial file next to it, linked to
    ``target`` only once the block ends without error, removed in every case. A restore that
    fails or is cancelled half-way leaves nothing that looks restored. Refuses an existing
    ``target`` (restores never overwrite), before and at the end."""
    if target.exists():
        raise FileExistsError(f"{target} exists already; restores never overwrite a file")
    partial = target.with_name(f".{target.name}.partial-{secrets.token_hex(4)}")
    try:
        yield partial
        try:
            os.link(partial, target)  # fails if the target appeared meanwhile: never replaces
        except OSError as exc:
            if target.exists():
                raise FileExistsError(
                    f"{target} appeared while restoring; restores never overwrite a file"
                ) from None
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            os.rename(partial, target)  # no hard links here (some network and FAT filesystems)
    finally:
        partial.unlink(missing_ok=True)
