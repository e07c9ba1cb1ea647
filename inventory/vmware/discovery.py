"""vSphere inventory in one PropertyCollector round trip per object type (a 10,000-VM vCenter
costs the same handful of requests as a lab): datacenters, folders, clusters, hosts,
datastores, resource pools and VMs with their disks, custom attributes, CBT and snapshots."""

from __future__ import annotations

from typing import Any

from pyVmomi import vim

from inventory.adapters import DiscoveredDisk, DiscoveredObject, DiscoveredVM, InventorySnapshot
from inventory.vmware.collector import Found, retrieve
from inventory.vmware.devices import disks_of
from inventory.vmware.session import Session

_POWER = {"poweredOn": "on", "poweredOff": "off", "suspended": "suspended"}

VM_PATHS = [
    "name",
    "parent",
    "resourcePool",
    "config.template",
    "config.instanceUuid",
    "config.guestFullName",
    "config.hardware.numCPU",
    "config.hardware.memoryMB",
    "config.hardware.device",
    "config.changeTrackingEnabled",
    "runtime.powerState",
    "runtime.host",
    "runtime.consolidationNeeded",
    "snapshot.rootSnapshotList",
    "customValue",
]


def snapshot_names(tree: list[Any] | None) -> list[str]:
    names: list[str] = []
    for node in tree or []:
        names.append(node.name)
        names.extend(snapshot_names(node.childSnapshotList))
    return names


class _Tree:
    """moref → (kind, name, parent moref) for every container, to place objects and VMs."""

    def __init__(self, session: Session) -> None:
        self.nodes: dict[str, tuple[str, str, str | None]] = {}
        self.system: set[str] = {session.content.rootFolder._moId}
        for dc in retrieve(
            session,
            vim.Datacenter,
            ["name", "parent", "vmFolder", "hostFolder", "datastoreFolder", "networkFolder"],
        ):
            self._add(dc, "datacenter")
            for path in ("vmFolder", "hostFolder", "datastoreFolder", "networkFolder"):
                if dc.get(path) is not None:
                    self.system.add(dc.get(path)._moId)
        for folder in retrieve(session, vim.Folder, ["name", "parent"]):
            self._add(folder, "folder")
        for compute in retrieve(session, vim.ComputeResource, ["name", "parent"]):
            clustered = isinstance(compute.obj, vim.ClusterComputeResource)
            # A standalone host sits in a ComputeResource of its own: the host is the node.
            self._add(compute, "cluster" if clustered else "compute")
        for pool in retrieve(session, vim.ResourcePool, ["name", "parent"]):
            parent = pool.get("parent")
            root = parent is not None and not isinstance(parent, vim.ResourcePool)
            self._add(pool, "root-pool" if root else "pool")
        for host in retrieve(session, vim.HostSystem, ["name", "parent"]):
            self._add(host, "host")
        self.datastores = retrieve(
            session, vim.Datastore, ["name", "parent", "summary.capacity", "summary.freeSpace"]
        )
        for ds in self.datastores:
            self._add(ds, "datastore")

    def _add(self, found: Found, kind: str) -> None:
        parent = found.get("parent")
        self.nodes[found.moref] = (kind, found.get("name", found.moref), _id(parent))

    def visible_parent(self, moref: str | None) -> str | None:
        """The nearest ancestor shown in the console (hidden folders and pools skipped)."""
        while moref is not None:
            hidden = moref in self.system or self.nodes.get(moref, ("compute",))[0] in (
                "compute",
                "root-pool",
            )
            if not hidden:
                return moref
            moref = self.nodes[moref][2] if moref in self.nodes else None
        return None

    def ancestor(self, moref: str | None, kind: str) -> str | None:
        while moref is not None and moref in self.nodes:
            if self.nodes[moref][0] == kind:
                return moref
            moref = self.nodes[moref][2]
        return None

    def objects(self) -> list[DiscoveredObject]:
        sizes = {
            ds.moref: (ds.get("summary.capacity"), ds.get("summary.freeSpace"))
            for ds in self.datastores
        }
        out = []
        for moref, (kind, name, parent) in self.nodes.items():
            if moref in self.system or kind in ("compute", "root-pool"):
                continue
            capacity, free = sizes.get(moref, (None, None))
            out.append(
                DiscoveredObject(moref, kind, name, self.visible_parent(parent), capacity, free)
            )
        return out


def _id(obj: Any) -> str | None:
    return obj._moId if obj is not None else None


def _field_names(session: Session) -> dict[int, str]:
    """Custom attribute names by key, read once per sync."""
    manager = session.content.customFieldsManager  # None on a standalone ESXi host
    return {f.key: f.name for f in (manager.field if manager is not None else [])}


def _attributes(names: dict[int, str], values: list[Any] | None) -> list[str]:
    """Custom attributes as ``name:value`` tags (policies select on them like on tags)."""
    return [
        f"{names[v.key]}:{v.value}"[:100]
        for v in values or []
        if v.key in names and str(getattr(v, "value", "") or "")
    ]


def discover(session: Session) -> InventorySnapshot:
    tree = _Tree(session)
    fields = _field_names(session)
    vms = []
    for found in retrieve(session, vim.VirtualMachine, VM_PATHS):
        if found.get("config.template"):
            continue  # templates cannot be snapshotted or run: nothing to back up
        host = _id(found.get("runtime.host"))
        folder = _id(found.get("parent"))
        disks = disks_of(found.get("config.hardware.device"))
        vms.append(
            DiscoveredVM(
                external_id=found.moref,
                name=found.get("name", found.moref),
                instance_uuid=found.get("config.instanceUuid") or "",
                power_state=_POWER.get(found.get("runtime.powerState", ""), "unknown"),
                guest_os=found.get("config.guestFullName") or "",
                cpus=found.get("config.hardware.numCPU") or 1,
                memory_mib=found.get("config.hardware.memoryMB") or 0,
                datacenter=tree.ancestor(folder, "datacenter"),
                cluster=tree.ancestor(host, "cluster"),
                host=host,
                folder=folder if folder and folder not in tree.system else None,
                tags=_attributes(fields, found.get("customValue")),
                disks=[
                    DiscoveredDisk(
                        device_key=d.device_key,
                        capacity_bytes=d.capacity,
                        label=d.label,
                        location=d.file_name,
                        mode=d.mode,
                        datastore=d.datastore,
                    )
                    for d in disks
                ],
                change_tracking=bool(found.get("config.changeTrackingEnabled")),
                snapshots=snapshot_names(found.get("snapshot.rootSnapshotList")),
                needs_consolidation=bool(found.get("runtime.consolidationNeeded")),
            )
        )
    return InventorySnapshot(objects=tree.objects(), vms=vms)
