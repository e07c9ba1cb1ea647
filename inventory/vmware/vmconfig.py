"""A VM's configuration as saved in a restore point (plain JSON), and the ConfigSpec that
re-creates the VM from it: hardware, controllers, disks (their slots and modes) and NICs."""

from __future__ import annotations

from typing import Any

from pyVmomi import VmomiSupport, vim

from inventory.vmware.devices import disks_of

KEY = "vsphere"  # vm_config[KEY] holds the saved configuration
_CONTROLLERS = (
    vim.vm.device.VirtualSCSIController,
    vim.vm.device.VirtualSATAController,
    vim.vm.device.VirtualNVMEController,
)


def _type_name(obj: Any) -> str:
    return str(type(obj).__name__)  # e.g. "vim.vm.device.ParaVirtualSCSIController"


def _nic(device: Any) -> dict[str, Any]:
    nic = {
        "type": _type_name(device),
        "label": device.deviceInfo.label if device.deviceInfo else "",
        "network": getattr(device.backing, "deviceName", "") or "",
    }
    port = getattr(device.backing, "port", None)  # a distributed port group
    if port is not None:
        nic["portgroup"] = port.portgroupKey or ""
    return nic


def capture(config: Any) -> dict[str, Any]:
    devices = list(config.hardware.device or [])
    controllers = [
        {
            "key": d.key,
            "type": _type_name(d),
            "bus": d.busNumber,
            "sharing": getattr(d, "sharedBus", None),
        }
        for d in devices
        if isinstance(d, _CONTROLLERS)
    ]
    by_key = {d.key: d for d in devices}
    disks = []
    for disk in disks_of(devices):
        device = by_key[disk.key]
        disks.append(
            {
                "key": disk.device_key,
                "controller_key": device.controllerKey,
                "unit": device.unitNumber,
                "capacity": disk.capacity,
                "thin": bool(getattr(device.backing, "thinProvisioned", False)),
                "mode": disk.mode,
                "label": disk.label,
                "file": disk.file_name,
            }
        )
    nics = [_nic(d) for d in devices if isinstance(d, vim.vm.device.VirtualEthernetCard)]
    return {
        KEY: {
            "name": config.name,
            "guest_id": config.guestId,
            "cpus": config.hardware.numCPU,
            "cores_per_socket": config.hardware.numCoresPerSocket or 1,
            "memory_mib": config.hardware.memoryMB,
            "firmware": config.firmware or "bios",
            "hardware_version": config.version or "",
            "annotation": config.annotation or "",
            "controllers": controllers,
            "disks": disks,
            "nics": nics,
        }
    }


def _type(name: str) -> Any:
    return VmomiSupport.GetVmodlType(name)


def create_spec(
    saved: dict[str, Any],
    *,
    name: str,
    datastore: str,
    disk_files: dict[str, str],
    networks: dict[str, Any],
    portgroups: dict[str, str] | None = None,
) -> tuple[Any, list[str]]:
    """A ConfigSpec for a new VM named ``name`` whose disks are the files already uploaded
    (``disk_files``: device key → "[ds] path.vmdk") and whose NICs join the same networks
    (``networks`` by name; ``portgroups``: distributed port group key → switch UUID); also
    notes on what was left out."""
    portgroups = portgroups or {}
    notes = []
    changes = []
    keys: dict[int, int] = {}
    for index, controller in enumerate(saved["controllers"]):
        keys[controller["key"]] = -1 - index
        device = _type(controller["type"])(key=-1 - index, busNumber=controller["bus"])
        if controller.get("sharing") is not None:
            device.sharedBus = controller["sharing"]
        changes.append(vim.vm.device.VirtualDeviceSpec(operation="add", device=device))
    for index, disk in enumerate(saved["disks"]):
        if disk["key"] not in disk_files:
            notes.append(f"{disk['label']}: not in the restore point, left out")
            continue
        device = vim.vm.device.VirtualDisk(
            key=-100 - index,
            controllerKey=keys.get(disk["controller_key"], disk["controller_key"]),
            unitNumber=disk["unit"],
            capacityInKB=disk["capacity"] // 1024,
            backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
                fileName=disk_files[disk["key"]],
                diskMode="persistent",
                thinProvisioned=disk["thin"],
            ),
        )
        changes.append(vim.vm.device.VirtualDeviceSpec(operation="add", device=device))
    for index, nic in enumerate(saved["nics"]):
        backing = _nic_backing(nic, networks, portgroups)
        if backing is None:
            where = nic.get("portgroup") or nic["network"]
            notes.append(f"{nic['label'] or 'NIC'}: network {where!r} not found, left out")
            continue
        device = _type(nic["type"])(
            key=-200 - index,
            backing=backing,
            addressType="generated",  # a new VM must not clash with the original's MAC
        )
        changes.append(vim.vm.device.VirtualDeviceSpec(operation="add", device=device))
    spec = vim.vm.ConfigSpec(
        name=name,
        guestId=saved["guest_id"],
        numCPUs=saved["cpus"],
        numCoresPerSocket=saved["cores_per_socket"],
        memoryMB=saved["memory_mib"],
        firmware=saved["firmware"],
        annotation=saved["annotation"],
        files=vim.vm.FileInfo(vmPathName=f"[{datastore}] {name}/"),
        deviceChange=changes,
    )
    if saved.get("hardware_version"):
        spec.version = saved["hardware_version"]
    return spec, notes


def _nic_backing(nic: dict[str, Any], networks: dict[str, Any], portgroups: dict[str, str]) -> Any:
    key = nic.get("portgroup")
    if key:
        if key not in portgroups:
            return None
        port = vim.dvs.PortConnection(portgroupKey=key, switchUuid=portgroups[key])
        return vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo(port=port)
    network = networks.get(nic["network"])
    if network is None:
        return None
    return vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(
        deviceName=nic["network"], network=network
    )


def descriptor(flat_basename: str, capacity: int, adapter: str = "lsilogic") -> bytes:
    """A VMFS flat VMDK descriptor for an uploaded ``-flat.vmdk`` of ``capacity`` bytes."""
    sectors = -(-capacity // 512)
    cylinders = max(sectors // (255 * 63), 1)
    return (
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        'createType="vmfs"\n\n# Extent description\n'
        f'RW {sectors} VMFS "{flat_basename}"\n\n'
        "# The Disk Data Base\n#DDB\n\n"
        f'ddb.adapterType = "{adapter}"\nddb.geometry.cylinders = "{cylinders}"\n'
        'ddb.geometry.heads = "255"\nddb.geometry.sectors = "63"\n'
        'ddb.virtualHWVersion = "13"\n'
    ).encode()
