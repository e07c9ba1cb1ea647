"""A disk of a libvirt pull-mode backup, read over NBD: the engine's block source."""

from __future__ import annotations

from inventory.kvm.nbd import NBDClient
from storage.engine.extents import Range


class NBDSource:
    """Reads a point-in-time disk export; holes come from ``base:allocation``."""

    def __init__(self, client: NBDClient):
        self.client = client
        self.size = client.size

    def read(self, offset: int, length: int) -> bytes:
        return self.client.read(offset, length)

    def readinto(self, offset: int, buffer: memoryview) -> None:
        self.client.readinto(offset, buffer)

    def allocated(self) -> list[Range]:
        return [(start, start + length) for start, length in self.client.allocated_extents()]

    def dirty(self, context: str) -> list[tuple[int, int]]:
        return self.client.dirty_extents(context)

    def close(self) -> None:
        self.client.close()
