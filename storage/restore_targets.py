"""Where a restore may go, checked before a run is queued: the target connection the user may
restore to, of the source VM's hypervisor family; a VM name not taken there (restores never
overwrite); a datastore the inventory knows, with room for the disks."""

from __future__ import annotations

from typing import Any

from backupconsole.errors import ActionRefused
from inventory.choices import ConnectionKind, ObjectKind
from inventory.models import Connection, InventoryObject, VirtualMachine
from storage.models import RestorePoint

KVM = "kvm"
VSPHERE = "vsphere"
# Hypervisor families a VM is restored to, by connection kind (others cannot be targets yet).
FAMILIES = {
    ConnectionKind.KVM: KVM,
    ConnectionKind.VCENTER: VSPHERE,
    ConnectionKind.ESXI: VSPHERE,
}
FAMILY_NAMES = {KVM: "KVM host", VSPHERE: "vCenter or ESXi host"}


def family(kind: str | None) -> str | None:
    return FAMILIES.get(ConnectionKind(kind)) if kind in ConnectionKind.values else None


def kinds_of(name: str) -> list[str]:
    return [str(kind) for kind, fam in FAMILIES.items() if fam == name]


def connection_kind(pk: Any) -> str | None:
    if not isinstance(pk, int):
        return None
    return Connection.objects.filter(pk=pk).values_list("kind", flat=True).first()


def source_family(point: RestorePoint) -> str | None:
    """The family of the hypervisor the point's VM came from (None: the VM row is gone)."""
    if point.vm_id is None:
        return None
    vms = VirtualMachine.objects.filter(pk=point.vm_id)
    return family(vms.values_list("connection__kind", flat=True).first())


def datastore_path_problem(path: str) -> str:
    """What is wrong with a disk's path inside a datastore ("" if nothing)."""
    if not path:
        return "The disk's path in the datastore is required, e.g. restored/disk0.vmdk."
    if path.startswith(("/", "[")):
        return "A path inside the datastore, e.g. restored/disk0.vmdk (no leading / or [name])."
    if not path.endswith(".vmdk"):
        return "A disk's path ends in .vmdk."
    if any(part in ("", ".", "..") for part in path.split("/")):
        return "No empty, . or .. parts in the path."
    return ""


def _target(options: dict[str, Any], user: Any, wanted: str, what: str) -> Connection:
    pk = options.get("connection")
    allowed = Connection.objects.restrict(user, "restore").filter(kind__in=kinds_of(wanted))
    connection = allowed.filter(pk=pk).first() if isinstance(pk, int) else None
    if connection is None:
        raise ActionRefused(
            f"Choose a {FAMILY_NAMES[wanted]} you may restore {what} to.", field="connection"
        )
    return connection


def _datastore(connection: Connection, name: Any, needed: int) -> InventoryObject:
    store = InventoryObject.objects.filter(
        connection=connection, kind=ObjectKind.DATASTORE, name=name
    ).first()
    if store is None:
        raise ActionRefused(
            f"{connection.name} has no datastore named {name!r} (as of its last sync).",
            field="datastore",
        )
    if store.free_bytes is not None and store.free_bytes < needed:
        raise ActionRefused(
            f"{store.name} has {_gib(store.free_bytes)} free; the restore writes {_gib(needed)}. "
            "Choose another datastore, or free space first.",
            field="datastore",
        )
    return store


def _gib(size: int) -> str:
    return f"{size / 2**30:.1f} GiB"


def check_target(point: RestorePoint, options: dict[str, Any], user: Any) -> None:
    """Refuse a restore that could only fail, field by field (see RestoreRequestSerializer)."""
    source = source_family(point)
    if options.get("what") == "disk":
        disk = point.disks.filter(device_key=options.get("disk")).first()
        if disk is None:
            raise ActionRefused("The restore point holds no such disk.", field="disk")
        if options.get("to") == "datastore":
            connection = _target(options, user, VSPHERE, "the disk")
            _datastore(connection, options.get("datastore"), disk.capacity_bytes)
        elif source == VSPHERE and options.get("format", "raw") != "raw":
            raise ActionRefused(
                "Disks of vSphere VMs are written raw; convert the file afterwards if needed.",
                field="format",
            )
        return
    wanted = source or family(connection_kind(options.get("connection"))) or KVM
    # A VM is restored to its own kind of hypervisor (the saved configuration is that kind's).
    connection = _target(options, user, wanted, "the VM")
    name = options.get("name")
    if VirtualMachine.objects.filter(connection=connection, name=name, present=True).exists():
        raise ActionRefused(
            f"A VM named {name} exists on {connection} already; restores never overwrite a VM, "
            "so choose a new name.",
            field="name",
        )
    if wanted == VSPHERE:
        needed = sum(point.disks.values_list("capacity_bytes", flat=True))
        _datastore(connection, options.get("datastore"), needed)
