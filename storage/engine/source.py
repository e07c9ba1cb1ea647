"""Block sources: random-access readers of a disk (a raw file or device here; NBD exports and
hypervisor transports implement the same protocol in the connectors)."""

from __future__ import annotations

import errno
import os
from typing import Protocol, runtime_checkable

from storage.engine.directio import ALIGN, cached_share, is_aligned, open_direct
from storage.engine.extents import Range


class BlockSource(Protocol):
    size: int

    def read(self, offset: int, length: int) -> bytes: ...

    def allocated(self) -> list[Range]:
        """Ranges that may hold data (all of the disk when the source cannot tell)."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class ReadsInto(Protocol):
    """A source that reads into the caller's buffer (the writer reuses a pool of them)."""

    def readinto(self, offset: int, buffer: memoryview) -> None:
        """Fill ``buffer`` with the bytes at ``offset``; an error on a short read."""
        ...


class FileSource:
    """A raw image file or block device, read with pread; holes found with SEEK_DATA/SEEK_HOLE.

    ``readinto`` reads aligned pieces that are not in the page cache into aligned buffers with
    direct I/O (``directio``): a backup reads each block once, so going through the cache would
    only cost CPU and evict others' pages. What the cache holds is copied from it, which is
    cheaper still (cachestat(2) tells without reading; a read with RWF_NOWAIT would start
    readahead of what is missing, so reading it twice).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.fd = os.open(self.path, os.O_RDONLY)
        self.size = os.lseek(self.fd, 0, os.SEEK_END)
        self._direct = open_direct(self.path, os.O_RDONLY)
        self._direct_ok = self._direct is not None

    def read(self, offset: int, length: int) -> bytes:
        data = os.pread(self.fd, length, offset)
        if len(data) != length:
            # Short reads only at the end of a shrinking source: say so instead of padding.
            raise OSError(errno.EIO, f"short read at {offset} in {self.path}")
        return data

    def readinto(self, offset: int, buffer: memoryview) -> None:
        done = 0
        direct = self._direct if self._direct_ok else None
        aligned = offset % ALIGN == 0 and len(buffer) % ALIGN == 0 and is_aligned(buffer)
        if direct is not None and aligned and not self._cached(offset, len(buffer)):
            try:
                # (An unaligned count means the end of the file: the rest is checked below.)
                while done < len(buffer) and done % ALIGN == 0:
                    got = os.preadv(direct, [buffer[done:]], offset + done)
                    if not got:
                        break
                    done += got
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                # Memory or a device that direct I/O does not accept: the page cache from now
                # on (the descriptor stays open until close(): other threads may be reading).
                self._direct_ok = False
        while done < len(buffer):
            got = os.preadv(self.fd, [buffer[done:]], offset + done)
            if not got:
                raise OSError(errno.EIO, f"short read at {offset + done} in {self.path}")
            done += got

    def _cached(self, offset: int, length: int) -> bool:
        """Mostly in the page cache already: a copy from there is cheaper than the disk."""
        share = cached_share(self.fd, offset, length)
        return share is not None and share >= 0.5

    def allocated(self) -> list[Range]:
        ranges: list[Range] = []
        offset = 0
        try:
            while offset < self.size:
                try:
                    start = os.lseek(self.fd, offset, os.SEEK_DATA)
                except OSError as exc:
                    if exc.errno == errno.ENXIO:  # no data after offset
                        break
                    raise
                end = os.lseek(self.fd, start, os.SEEK_HOLE)
                ranges.append((start, min(end, self.size)))
                offset = end
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
                return [(0, self.size)]  # no hole support (block devices): read everything
            raise
        return ranges

    def close(self) -> None:
        if self._direct is not None:
            os.close(self._direct)
            self._direct = None
        os.close(self.fd)

    def __enter__(self) -> FileSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
