"""The hypervisor adapter interface, one for vSphere, Hyper-V, XenServer/XCP-ng and KVM.

A connector discovers a connection's inventory, says what it can do, and makes **backup
snapshots**: a context manager that records every artifact it creates (snapshot, checkpoint,
scratch file, export) *before* creating it, and removes them on exit whatever happened. Inside,
each disk offers a block source (reading the point-in-time data through a named transport) and
its changed extents since a change-tracking token, or a typed "tracking lost" answer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

from storage.engine.source import BlockSource


@dataclass(frozen=True)
class Capabilities:
    change_tracking: bool
    quiesce: bool
    transports: tuple[str, ...]


@dataclass
class DiscoveredObject:
    external_id: str
    kind: str  # inventory.choices.ObjectKind
    name: str
    parent: str | None = None  # external id of the parent object
    capacity_bytes: int | None = None  # datastores: size and free space, where known
    free_bytes: int | None = None


@dataclass
class DiscoveredDisk:
    device_key: str
    capacity_bytes: int
    label: str = ""
    location: str = ""
    mode: str = "persistent"  # inventory.choices.DiskMode
    datastore: str | None = None  # external id


@dataclass
class DiscoveredVM:
    external_id: str
    name: str
    instance_uuid: str = ""
    power_state: str = "unknown"
    guest_os: str = ""
    cpus: int = 1
    memory_mib: int = 0
    datacenter: str | None = None
    cluster: str | None = None
    host: str | None = None
    folder: str | None = None
    tags: list[str] = field(default_factory=list)
    disks: list[DiscoveredDisk] = field(default_factory=list)
    change_tracking: bool | None = None  # CBT / dirty bitmaps on; None: not reported
    snapshots: list[str] = field(default_factory=list)  # names of snapshots present
    needs_consolidation: bool = False


@dataclass
class InventorySnapshot:
    objects: list[DiscoveredObject]
    vms: list[DiscoveredVM]


@dataclass(frozen=True)
class TrackingLost:
    """Change tracking cannot answer: the disk must be read in full, and this says why."""

    reason: str


class SnapshotDisk(Protocol):
    device_key: str
    size: int
    # The change-tracking token of this snapshot, to pass as ``since`` next time.
    token: str

    def source(self, transport: str | None = None) -> BlockSource: ...

    def changes_since(self, token: str) -> list[tuple[int, int]] | TrackingLost: ...


class BackupSnapshot(Protocol):
    consistency: str  # "application" or "crash"
    consistency_note: str  # why crash-consistent, when it is
    # Which transport reads the disks and why (e.g. a fallback and its reason), for the run log.
    transport_note: str
    # Anything else the run should warn about (CBT turned on, disks left out and why).
    warnings: list[str]
    vm_config: dict[str, Any]

    @property
    def disks(self) -> Mapping[str, SnapshotDisk]: ...

    def keep_tracking(self) -> None:
        """Called once the restore point is committed: the new tokens become the base."""
        ...


# The transports a backup may use, in the policy's order of preference, less those the proxy
# does not advertise. The engine sets it around ``backup_snapshot`` (see ``transport_preference``);
# connectors with several transports try them in this order and say why they fell back. None:
# not set (the connector uses the default order).
PREFERRED_TRANSPORTS: ContextVar[tuple[str, ...] | None] = ContextVar(
    "preferred_transports", default=None
)


@contextmanager
def transport_preference(order: Sequence[str]) -> Iterator[None]:
    token = PREFERRED_TRANSPORTS.set(tuple(order))
    try:
        yield
    finally:
        PREFERRED_TRANSPORTS.reset(token)


@dataclass
class RestoreJob:
    """What a connector restores: a restore point's repository and manifest, the validated options
    (storage/restore_targets.py: what, disk, name, path or datastore, start, format), and where
    it reports progress (bytes done, bytes in all) and log lines."""

    repo: Any  # storage.engine.repository.Repository
    manifest: Any  # storage.engine.manifest.Manifest
    options: dict[str, Any]
    progress: Callable[[int, int], None]
    log: Callable[[str], None]

    def size(self, device_key: str | None = None) -> int:
        """Bytes of one disk, or of all of them."""
        disks = self.manifest.disks
        return sum(d.size for d in disks if device_key in (None, d.device_key))


@dataclass
class RestoreOutcome:
    message: str  # what was restored where, for the run's result
    notes: list[str] = field(default_factory=list)  # warnings: the run ends as a warning


# Records an artifact before it is created; returns a handle to forget it once removed.
RecordArtifact = Callable[[str, dict[str, Any]], Callable[[], None]]


class Connector(Protocol):
    kind: str
    # The key under which its backups save the VM's configuration in a manifest's vm_config:
    # how a restore point made by this connector is recognised.
    config_key: str

    def capabilities(self, connection: Any) -> Capabilities: ...

    def discover(self, connection: Any) -> InventorySnapshot: ...

    def backup_snapshot(
        self,
        connection: Any,
        vm: Any,
        *,
        quiesce: bool,
        record: RecordArtifact,
        since: dict[str, str],
    ) -> AbstractContextManager[BackupSnapshot]:
        """``since``: per disk, the change-tracking token of the restore point to build on
        (hypervisors such as libvirt need it when the snapshot is taken)."""
        ...

    def remove_artifact(self, connection: Any, kind: str, data: dict[str, Any]) -> None:
        """Remove a leftover (the sweeper calls this for artifacts of crashed proxies)."""
        ...

    def restore_vm(self, connection: Any, job: RestoreJob) -> RestoreOutcome:
        """A new VM on ``connection`` from the saved configuration; never overwrites."""
        ...

    def restore_disk(self, connection: Any | None, job: RestoreJob) -> RestoreOutcome:
        """One disk: to a file on this proxy (``connection`` None), or to the hypervisor's own
        storage (a vSphere datastore)."""
        ...


_REGISTRY: dict[str, Connector] = {}


def register(kind: str, connector: Connector) -> None:
    _REGISTRY[kind] = connector


def get_connector(kind: str) -> Connector | None:
    _load_builtin()
    return _REGISTRY.get(kind)


_loaded: list[bool] = []
# Worker threads may ask for connectors at the same moment: the first loads them, the others wait.
_loading = threading.Lock()


def _load_builtin() -> None:
    if _loaded:
        return
    with _loading:
        if _loaded:
            return
        from inventory.vmware.connector import VSphereConnector

        vsphere = VSphereConnector()
        register("vcenter", vsphere)
        register("esxi", vsphere)
        try:
            from inventory.kvm.connector import KVMConnector
        except ImportError:  # the libvirt binding is optional outside KVM proxies
            pass
        else:
            register("kvm", KVMConnector())
        _loaded.append(True)  # only once every connector is registered


def connector_for_config(vm_config: Mapping[str, Any]) -> Connector | None:
    """The connector whose backups saved this VM configuration."""
    _load_builtin()
    return next((c for c in _REGISTRY.values() if c.config_key in vm_config), None)


def iter_kinds() -> Iterator[str]:
    _load_builtin()
    yield from _REGISTRY
