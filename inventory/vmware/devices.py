"""A VM's virtual disks as the rest of the product sees them: capacity, datastore path,
controller slot, and the mode that decides whether a snapshot (so a backup) can include them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyVmomi import vim

from inventory.choices import DiskMode

_BUS = (
    (vim.vm.device.VirtualSCSIController, "SCSI"),
    (vim.vm.device.VirtualIDEController, "IDE"),
    (vim.vm.device.VirtualSATAController, "SATA"),
    (vim.vm.device.VirtualNVMEController, "NVMe"),
)


@dataclass(frozen=True)
class DiskInfo:
    key: int
    label: str
    capacity: int
    file_name: str  # "[datastore] folder/disk.vmdk"
    datastore: str | None  # moref of the backing's datastore
    mode: str  # inventory.choices.DiskMode
    controller: str  # "SCSI 0:1"
    change_id: str
    has_parent: bool  # a delta disk (the VM has snapshots): not a flat file
    uuid: str

    @property
    def device_key(self) -> str:
        return str(self.key)


def split_path(file_name: str) -> tuple[str, str]:
    """``"[ds1] vm/vm.vmdk"`` → ``("ds1", "vm/vm.vmdk")``."""
    if not file_name.startswith("["):
        return "", file_name
    datastore, _, path = file_name[1:].partition("]")
    return datastore, path.strip()


def flat_name(file_name: str) -> str:
    """The data file of a flat disk: ``vm/disk.vmdk`` → ``vm/disk-flat.vmdk`` (the descriptor's
    usual extent name; layoutEx gives the real one when the host reports it)."""
    return file_name[: -len(".vmdk")] + "-flat.vmdk" if file_name.endswith(".vmdk") else file_name


def disk_mode(disk: Any) -> str:
    backing = disk.backing
    mode = getattr(backing, "diskMode", "") or "persistent"
    if isinstance(backing, vim.vm.device.VirtualDisk.RawDiskMappingVer1BackingInfo):
        if backing.compatibilityMode == "physicalMode":
            return DiskMode.RDM_PHYSICAL
        if not mode.startswith("independent"):
            return DiskMode.RDM_VIRTUAL
    if mode == "independent_persistent":
        return DiskMode.INDEPENDENT_PERSISTENT
    if mode == "independent_nonpersistent":
        return DiskMode.INDEPENDENT_NONPERSISTENT
    return DiskMode.PERSISTENT


def _controllers(devices: list[Any]) -> dict[int, str]:
    names = {}
    for device in devices:
        for kind, bus in _BUS:
            if isinstance(device, kind):
                names[device.key] = f"{bus} {device.busNumber}"
    return names


def disks_of(devices: list[Any] | None) -> list[DiskInfo]:
    devices = list(devices or [])
    controllers = _controllers(devices)
    out = []
    for device in devices:
        if not isinstance(device, vim.vm.device.VirtualDisk):
            continue
        backing = device.backing
        datastore = getattr(backing, "datastore", None)
        bus = controllers.get(device.controllerKey or 0, "bus")
        slot = f"{bus}:{device.unitNumber}"
        label = device.deviceInfo.label if device.deviceInfo else f"disk {device.key}"
        capacity = device.capacityInBytes or (device.capacityInKB or 0) * 1024
        out.append(
            DiskInfo(
                key=device.key,
                label=f"{label} ({slot})",
                capacity=capacity,
                file_name=getattr(backing, "fileName", "") or "",
                datastore=datastore._moId if datastore is not None else None,
                mode=disk_mode(device),
                controller=slot,
                change_id=getattr(backing, "changeId", None) or "",
                has_parent=getattr(backing, "parent", None) is not None,
                uuid=getattr(backing, "uuid", None) or "",
            )
        )
    return out
