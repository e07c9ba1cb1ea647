"""The manifest of a restore point: written last, so its presence means the point is complete."""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

VM_KEY = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


def new_point_id(created: datetime) -> str:
    # Milliseconds in the id, so a listing sorts by time even for points of the same second.
    utc = created.astimezone(UTC)
    return f"{utc:%Y%m%dT%H%M%S}{utc.microsecond // 1000:03d}Z-{secrets.token_hex(8)}"


def manifest_key(vm_key: str, point_id: str) -> str:
    return f"snapshots/{vm_key}/{point_id}"


@dataclass
class DiskRecord:
    device_key: str
    size: int
    index: str  # hex digest of the disk index
    label: str = ""
    read_bytes: int = 0
    stored_bytes: int = 0
    new_chunk_bytes: int = 0
    change_token: str = ""
    full_read_reason: str = ""
    sha256: str | None = None


@dataclass
class Stats:
    logical_bytes: int = 0
    read_bytes: int = 0
    stored_bytes: int = 0
    new_unique_bytes: int = 0


@dataclass
class Manifest:
    id: str
    vm_key: str
    vm_name: str
    created: datetime
    disks: list[DiskRecord]
    consistency: str = "crash"
    vm_config: dict[str, Any] = field(default_factory=dict)
    parent: str | None = None
    immutable_until: datetime | None = None
    stats: Stats = field(default_factory=Stats)

    @property
    def key(self) -> str:
        return manifest_key(self.vm_key, self.id)

    def disk(self, device_key: str) -> DiskRecord:
        for disk in self.disks:
            if disk.device_key == device_key:
                return disk
        raise KeyError(f"restore point {self.id} has no disk {device_key!r}")

    def to_json(self) -> bytes:
        document = {
            "version": 1,
            "id": self.id,
            "vm": {"key": self.vm_key, "name": self.vm_name, "config": self.vm_config},
            "created": self.created.astimezone(UTC).isoformat(),
            "consistency": self.consistency,
            "immutable_until": (
                self.immutable_until.astimezone(UTC).isoformat() if self.immutable_until else None
            ),
            "parent": self.parent,
            "disks": [asdict(d) for d in self.disks],
            "stats": asdict(self.stats),
        }
        return json.dumps(document, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        doc = json.loads(raw)
        if doc.get("version") != 1:
            raise ValueError(f"manifest version {doc.get('version')!r} is not supported")
        until = doc.get("immutable_until")
        return cls(
            id=doc["id"],
            vm_key=doc["vm"]["key"],
            vm_name=doc["vm"]["name"],
            vm_config=doc["vm"].get("config", {}),
            created=datetime.fromisoformat(doc["created"]),
            consistency=doc.get("consistency", "crash"),
            immutable_until=datetime.fromisoformat(until) if until else None,
            parent=doc.get("parent"),
            disks=[DiskRecord(**d) for d in doc["disks"]],
            stats=Stats(**doc.get("stats", {})),
        )
