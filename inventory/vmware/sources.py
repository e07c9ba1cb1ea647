"""Block sources of a snapshot disk: over the network (HTTP Range reads of the datastore file)
or from a path on the proxy (a hot-added disk, a SAN-mounted datastore). Allocated areas come
from CBT (QueryChangedDiskAreas with ``*``), computed once per disk."""

from __future__ import annotations

import os
from collections.abc import Callable

from inventory.vmware.files import DatastoreHTTP
from storage.engine.extents import Range


class HTTPSource:
    def __init__(
        self, files: DatastoreHTTP, url: str, size: int, allocated: Callable[[], list[Range]]
    ) -> None:
        self.files, self.url, self.size = files, url, size
        self._allocated = allocated

    def read(self, offset: int, length: int) -> bytes:
        return self.files.read(self.url, offset, length)

    def allocated(self) -> list[Range]:
        return self._allocated()

    def close(self) -> None:
        self.files.close()


class LocalSource:
    """A disk's data readable on this proxy: a block device or a flat extent file."""

    def __init__(self, path: str, size: int, allocated: Callable[[], list[Range]]) -> None:
        self.path, self.size = path, size
        self._allocated = allocated
        self.fd = os.open(path, os.O_RDONLY)

    def read(self, offset: int, length: int) -> bytes:
        data = os.pread(self.fd, length, offset)
        # A thin flat file may end before the disk's capacity: the rest reads as zeros.
        return data + bytes(length - len(data))

    def allocated(self) -> list[Range]:
        return self._allocated()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
