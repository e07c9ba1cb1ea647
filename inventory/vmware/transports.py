"""Transport modes, as VADP names them, chosen per VM in the policy's order of preference:

* **HotAdd**: this proxy is itself a VM on the same ESXi host; the snapshot's disks are attached
  to it (non-persistent, so it can never write into them) and read as local devices, then
  detached. Offered only when the proxy knows its own VM (``VMWARE_HOTADD_VM``).
* **SAN**: the proxy sees the datastore's LUN, mounted read-only (a VMFS FUSE mount, or the NFS
  export), and reads the disk's extent files directly. Offered only for datastores with a
  configured path that exists on this proxy (``VMWARE_SAN_PATHS``).
* **NBDSSL / NBD**: network reads from the host, here HTTP Range requests on the datastore file
  interface. vSphere serves that interface over HTTPS only, so NBD is encrypted too.

A mode whose preconditions do not hold is not tried; the reason is kept, and the note for the
run says which mode was used and why the ones before it were not.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from django.conf import settings
from pyVmomi import vim, vmodl

from inventory.adapters import RecordArtifact
from inventory.choices import Transport
from inventory.vmware.devices import DiskInfo, flat_name, split_path
from inventory.vmware.files import DatastoreHTTP, folder_url
from inventory.vmware.session import Session, VSphereError, retrieve_one
from inventory.vmware.sources import HTTPSource, LocalSource
from storage.engine.extents import Range
from storage.engine.source import BlockSource

NETWORK = (Transport.NBDSSL.value, Transport.NBD.value)
DEVICE_WAIT = 15.0  # seconds for a hot-added disk to appear as a device


class TransportUnavailable(Exception):
    """This mode cannot read the VM's disks from this proxy; the message says why."""


@dataclass(frozen=True)
class ProxyConfig:
    hotadd_vm: str  # the proxy's own VM: moref, BIOS or instance UUID, or "auto"
    san_paths: dict[str, str]  # datastore name → read-only mount of its LUN on this proxy

    @classmethod
    def load(cls) -> ProxyConfig:
        return cls(hotadd_vm=settings.VMWARE_HOTADD_VM, san_paths=dict(settings.VMWARE_SAN_PATHS))

    def offered(self) -> tuple[str, ...]:
        modes = []
        if self.hotadd_vm:
            modes.append(Transport.HOTADD.value)
        if any(Path(p).is_dir() for p in self.san_paths.values()):
            modes.append(Transport.SAN.value)
        return (*modes, *NETWORK)


@dataclass
class SnapDisk:
    info: DiskInfo  # as the snapshot's configuration describes it
    datastore_name: str
    datastore_url: str  # the datastore's URL; a local directory on simulators
    allocated: Callable[[], list[Range]]


@dataclass
class Context:
    session: Session
    vm: Any
    vm_name: str
    host: str | None  # moref of the VM's host
    datacenter: str  # inventory path, for dcPath
    disks: list[SnapDisk]
    record: RecordArtifact


class Plan(Protocol):
    name: str

    def open(self, disk: SnapDisk) -> BlockSource: ...

    def describe(self) -> str: ...

    def close(self) -> None: ...


@dataclass
class NetworkPlan:
    name: str
    context: Context
    opened: list[DatastoreHTTP] = field(default_factory=list)

    @classmethod
    def prepare(cls, name: str, context: Context, _config: ProxyConfig) -> NetworkPlan:
        for disk in context.disks:
            if disk.info.has_parent:
                raise TransportUnavailable(
                    f"{disk.info.label} is a delta disk (the VM had snapshots before this "
                    "backup); the file interface reads flat disks only. Consolidate, or use "
                    "HotAdd."
                )
        return cls(name, context)

    def open(self, disk: SnapDisk) -> BlockSource:
        files = DatastoreHTTP(self.context.session)
        self.opened.append(files)
        url = folder_url(
            self.context.datacenter,
            disk.datastore_name,
            flat_name(split_path(disk.info.file_name)[1]),
        )
        return HTTPSource(files, url, disk.info.capacity, disk.allocated)

    def describe(self) -> str:
        return f"{self.name}: HTTPS range reads from {self.context.session.endpoint.where}"

    def close(self) -> None:
        for files in self.opened:
            files.close()


def _local_extent(disk: SnapDisk, root: str) -> str:
    return os.path.join(root, flat_name(split_path(disk.info.file_name)[1]))


@dataclass
class SANPlan:
    paths: dict[str, str]  # device key → local extent path
    name: str = Transport.SAN.value
    sources: list[LocalSource] = field(default_factory=list)

    @classmethod
    def prepare(cls, _name: str, context: Context, config: ProxyConfig) -> SANPlan:
        paths = {}
        for disk in context.disks:
            root = config.san_paths.get(disk.datastore_name)
            if not root or not os.path.isdir(root):
                raise TransportUnavailable(
                    f"datastore {disk.datastore_name} is not mounted on this proxy "
                    "(no SAN path configured for it)"
                )
            if disk.info.has_parent:
                raise TransportUnavailable(f"{disk.info.label} is a delta disk, not a flat extent")
            extent = _local_extent(disk, root)
            if not os.path.exists(extent):
                raise TransportUnavailable(f"{extent} is not visible on the SAN mount")
            paths[disk.info.device_key] = extent
        return cls(paths)

    def open(self, disk: SnapDisk) -> BlockSource:
        source = LocalSource(self.paths[disk.info.device_key], disk.info.capacity, disk.allocated)
        self.sources.append(source)
        return source

    def describe(self) -> str:
        return "san: extents read from the datastore's mount on this proxy"

    def close(self) -> None:
        for source in self.sources:
            source.close()


def find_vm(session: Session, ident: str) -> Any:
    """A VM by moref, BIOS UUID or instance UUID (``auto``: this machine's BIOS UUID)."""
    if ident == "auto":
        try:
            ident = Path("/sys/class/dmi/id/product_uuid").read_text().strip().lower()
        except OSError as exc:
            raise TransportUnavailable(f"cannot read this machine's BIOS UUID: {exc}") from exc
    if len(ident) == 36 and ident.count("-") == 4:
        index = session.content.searchIndex
        for instance in (False, True):
            found = index.FindByUuid(None, ident, True, instance)
            if found is not None:
                return found
        raise TransportUnavailable(f"no VM with UUID {ident} (the proxy's VM) in this inventory")
    return vim.VirtualMachine(ident, session.stub)


def attached_disks(session: Session, proxy_vm: Any, files: Sequence[str]) -> list[Any]:
    devices = retrieve_one(session, proxy_vm, ["config.hardware.device"]).get(
        "config.hardware.device", []
    )
    return [
        d
        for d in devices
        if isinstance(d, vim.vm.device.VirtualDisk) and getattr(d.backing, "fileName", "") in files
    ]


def detach(session: Session, proxy_vm: Any, files: Sequence[str]) -> None:
    """Remove hot-added disks from the proxy VM; the files themselves stay (no fileOperation)."""
    disks = attached_disks(session, proxy_vm, files)
    if not disks:
        return
    spec = vim.vm.ConfigSpec(
        deviceChange=[vim.vm.device.VirtualDeviceSpec(operation="remove", device=d) for d in disks]
    )
    session.wait(proxy_vm.ReconfigVM_Task(spec), what="detaching hot-added disks")


def _free_slots(devices: list[Any]) -> tuple[int, list[int]]:
    controllers = [d for d in devices if isinstance(d, vim.vm.device.VirtualSCSIController)]
    if not controllers:
        raise TransportUnavailable("the proxy VM has no SCSI controller to attach disks to")
    controller = controllers[0]
    used = {d.unitNumber for d in devices if getattr(d, "controllerKey", None) == controller.key}
    return controller.key, [u for u in range(16) if u != 7 and u not in used]


def _device_for(disk: Any, local_file: str, wait: float) -> str | None:
    """Where the attached disk shows up on this proxy: its SCSI device by UUID (the proxy VM
    needs disk.EnableUUID=TRUE), or, when the datastore is a local directory here (simulator,
    NFS mounted at the same path), its extent file."""
    uuid = "".join(ch for ch in (getattr(disk.backing, "uuid", "") or "") if ch.isalnum())
    deadline = time.monotonic() + wait
    while True:
        if uuid:
            device = Path("/dev/disk/by-id") / f"wwn-0x{uuid.lower()}"
            if device.exists():
                return str(device)
        if local_file and os.path.exists(local_file):
            return local_file
        if not uuid or time.monotonic() > deadline:
            return None
        time.sleep(0.2)


@dataclass
class HotAddPlan:
    context: Context
    proxy_vm: Any
    files: list[str]
    forget: Callable[[], None]
    paths: dict[str, str] = field(default_factory=dict)
    sources: list[LocalSource] = field(default_factory=list)
    name: str = Transport.HOTADD.value

    @classmethod
    def prepare(cls, _name: str, context: Context, config: ProxyConfig) -> HotAddPlan:
        if not config.hotadd_vm:
            raise TransportUnavailable("this proxy is not a VM known to vSphere (no HotAdd VM set)")
        session = context.session
        proxy_vm = find_vm(session, config.hotadd_vm)
        try:
            proxy = retrieve_one(
                session,
                proxy_vm,
                ["name", "runtime.host", "runtime.powerState", "config.hardware.device"],
            )
        except vmodl.fault.ManagedObjectNotFound as exc:
            raise TransportUnavailable(f"the proxy VM {config.hotadd_vm} does not exist") from exc
        proxy_host = proxy.get("runtime.host")
        if proxy_host is None or proxy_host._moId != context.host:
            raise TransportUnavailable(
                f"the proxy VM {proxy.get('name')} runs on host "
                f"{proxy_host._moId if proxy_host else '?'}, {context.vm_name} on {context.host}"
            )
        if proxy.get("runtime.powerState") != "poweredOn":
            raise TransportUnavailable(f"the proxy VM {proxy.get('name')} is not running")
        controller, free = _free_slots(proxy.get("config.hardware.device", []))
        if len(free) < len(context.disks):
            raise TransportUnavailable(
                f"the proxy VM has {len(free)} free SCSI slots for {len(context.disks)} disks"
            )
        files = [d.info.file_name for d in context.disks]
        forget = context.record("hotadd", {"proxy_vm": proxy_vm._moId, "files": files})
        plan = cls(context, proxy_vm, files, forget)
        spec = vim.vm.ConfigSpec(
            deviceChange=[
                vim.vm.device.VirtualDeviceSpec(
                    operation="add",
                    device=vim.vm.device.VirtualDisk(
                        key=-100 - i,
                        controllerKey=controller,
                        unitNumber=unit,
                        capacityInKB=max(d.info.capacity // 1024, 1),
                        backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
                            fileName=d.info.file_name, diskMode="independent_nonpersistent"
                        ),
                    ),
                )
                for i, (d, unit) in enumerate(zip(context.disks, free, strict=False))
            ]
        )
        try:
            session.wait(proxy_vm.ReconfigVM_Task(spec), what="attaching the snapshot's disks")
            plan._locate()
        except (VSphereError, vmodl.MethodFault, TransportUnavailable) as exc:
            plan.close()
            if isinstance(exc, TransportUnavailable):
                raise
            raise TransportUnavailable(f"attaching to the proxy VM failed: {exc}") from exc
        return plan

    def _locate(self) -> None:
        attached = {
            getattr(d.backing, "fileName", ""): d
            for d in attached_disks(self.context.session, self.proxy_vm, self.files)
        }
        for disk in self.context.disks:
            device = attached.get(disk.info.file_name)
            if device is None:
                raise TransportUnavailable(f"{disk.info.label} did not attach to the proxy VM")
            local = ""
            if os.path.isdir(disk.datastore_url) and not disk.info.has_parent:
                local = _local_extent(disk, disk.datastore_url)
            path = _device_for(device, local, DEVICE_WAIT)
            if path is None:
                raise TransportUnavailable(
                    f"{disk.info.label} attached but no device appeared on this proxy "
                    "(set disk.EnableUUID=TRUE on the proxy VM)"
                )
            self.paths[disk.info.device_key] = path

    def open(self, disk: SnapDisk) -> BlockSource:
        source = LocalSource(self.paths[disk.info.device_key], disk.info.capacity, disk.allocated)
        self.sources.append(source)
        return source

    def describe(self) -> str:
        return f"hotadd: disks attached to the proxy VM {self.proxy_vm._moId}"

    def close(self) -> None:
        for source in self.sources:
            with suppress(OSError):
                source.close()
        try:
            detach(self.context.session, self.proxy_vm, self.files)
        except (VSphereError, vmodl.MethodFault, OSError):
            return  # the artifact stays recorded: the sweeper detaches them later
        self.forget()


_PLANNERS: dict[str, Callable[[str, Context, ProxyConfig], Plan]] = {
    Transport.HOTADD.value: HotAddPlan.prepare,
    Transport.SAN.value: SANPlan.prepare,
    Transport.NBDSSL.value: NetworkPlan.prepare,
    Transport.NBD.value: NetworkPlan.prepare,
}


def choose(order: Sequence[str], context: Context, config: ProxyConfig) -> tuple[Plan, str]:
    """The first mode of ``order`` whose preconditions hold, and a note for the run log."""
    passed = []
    for name in order:
        planner = _PLANNERS.get(name)
        if planner is None:
            passed.append(f"{name}: not a vSphere transport")
            continue
        try:
            plan = planner(name, context, config)
        except TransportUnavailable as exc:
            passed.append(f"{name}: {exc}")
            continue
        note = plan.describe()
        if passed:
            note += f" (not used: {'; '.join(passed)})"
        return plan, note
    raise VSphereError(
        f"no transport of the policy's order can read {context.vm_name} from this proxy: "
        + ("; ".join(passed) or "the order is empty")
    )
