"""Registry of hypervisor connectors, one per connection kind.

Each connector implements the adapter interface (inventory discovery, snapshots, change tracking,
block sources, restore targets). A kind without a registered connector cannot be backed up yet,
and runs say so for each VM instead of failing silently.
"""

from __future__ import annotations

from typing import Any

_REGISTRY: dict[str, Any] = {}


def register(kind: str, connector: Any) -> None:
    _REGISTRY[kind] = connector


def get_connector(kind: str) -> Any | None:
    return _REGISTRY.get(kind)
