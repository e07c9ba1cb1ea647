"""Block sources: random-access readers of a disk (a raw file or device here; NBD exports and
hypervisor transports implement the same protocol in the connectors)."""

from __future__ import annotations

import errno
import os
from typing import Protocol

from storage.engine.extents import Range


class BlockSource(Protocol):
    size: int

    def read(self, offset: int, length: int) -> bytes: ...

    def allocated(self) -> list[Range]:
        """Ranges that may hold data (all of the disk when the source cannot tell)."""
        ...

    def close(self) -> None: ...


class FileSource:
    """A raw image file or block device, read with pread; holes found with SEEK_DATA/SEEK_HOLE."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.fd = os.open(self.path, os.O_RDONLY)
        self.size = os.lseek(self.fd, 0, os.SEEK_END)

    def read(self, offset: int, length: int) -> bytes:
        data = os.pread(self.fd, length, offset)
        if len(data) != length:
            # Short reads only at the end of a shrinking source: say so instead of padding.
            raise OSError(errno.EIO, f"short read at {offset} in {self.path}")
        return data

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
        os.close(self.fd)

    def __enter__(self) -> FileSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
