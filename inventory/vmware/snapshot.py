"""The backup snapshot of a vSphere VM, VADP style: CBT on (turned on where it was off, and
said so), a snapshot without memory, quiesced when asked and VMware Tools run (otherwise
crash-consistent, with the reason), disks read through the chosen transport, changed areas from
QueryChangedDiskAreas, and the snapshot removed on the way out whatever happened.

The snapshot is recorded (SnapshotArtifact) before it is created, so one left behind by a
crashed proxy is found and removed by the sweeper or the snapshot hunter.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pyVmomi import vim, vmodl

from inventory.adapters import PREFERRED_TRANSPORTS, RecordArtifact, TrackingLost
from inventory.choices import EXCLUDED_DISK_MODES, DiskMode
from inventory.vmware import transports
from inventory.vmware.devices import DiskInfo, disks_of, split_path
from inventory.vmware.placement import datacenter_of, datastores, vm_properties, vm_ref
from inventory.vmware.session import Session, VSphereError, retrieve_one
from inventory.vmware.vmconfig import capture
from jobs.options import resolve_options
from storage.engine.extents import Range
from storage.engine.source import BlockSource

PREFIX = "bc-backup-"  # the product's snapshots; the hunter removes only these


def snapshot_name() -> str:
    return f"{PREFIX}{datetime.now(UTC):%Y%m%dT%H%M%S%f}"


def _epoch(change_id: str) -> str:
    """The CBT period of a change ID ("52 … 7d/12" → "52 … 7d"); a reset starts a new one."""
    return change_id.rpartition("/")[0]


class VMwareDisk:
    def __init__(
        self, session: Session, vm: Any, snapshot: Any, info: DiskInfo, store: Any, lost: str
    ) -> None:
        self.session, self.vm, self.snapshot, self.info = session, vm, snapshot, info
        self.device_key, self.size, self.token = info.device_key, info.capacity, info.change_id
        self.lost = lost  # why change tracking cannot answer for this backup, or ""
        self.snap_disk = transports.SnapDisk(
            info,
            store.name if store else split_path(info.file_name)[0],
            store.url if store else "",
            self.allocated,
        )
        self.plan: transports.Plan | None = None
        self._allocated: list[Range] | None = None

    def source(self, transport: str | None = None) -> BlockSource:
        assert self.plan is not None, "the transport is chosen before disks are read"
        return self.plan.open(self.snap_disk)

    def _query(self, change_id: str) -> list[tuple[int, int]]:
        """QueryChangedDiskAreas over the whole disk: hosts answer a window at a time."""
        areas: list[tuple[int, int]] = []
        offset = 0
        while offset < self.size:
            info = self.vm.QueryChangedDiskAreas(
                snapshot=self.snapshot,
                deviceKey=self.info.key,
                startOffset=offset,
                changeId=change_id,
            )
            areas.extend((a.start, a.length) for a in info.changedArea or [])
            if info.length <= 0:
                break
            offset = info.startOffset + info.length
        return areas

    def allocated(self) -> list[Range]:
        """Allocated areas (CBT's ``*``); the whole disk when CBT cannot tell."""
        if self._allocated is None:
            try:
                self._allocated = [(s, s + n) for s, n in self._query("*")]
            except vmodl.MethodFault:
                self._allocated = [(0, self.size)]
        return self._allocated

    def changes_since(self, token: str) -> list[tuple[int, int]] | TrackingLost:
        if self.lost:
            return TrackingLost(self.lost)
        if not self.token:
            return TrackingLost("CBT gave this disk no change ID at the snapshot.")
        try:
            return self._query(token)
        except vmodl.MethodFault as exc:
            # The host decides; the change ID's tracking period explains the usual cause.
            why = getattr(exc, "msg", "") or type(exc).__name__
            if _epoch(token) != _epoch(self.token):
                why += (
                    "; it is from an earlier CBT period (CBT was reset, or the VM was moved or "
                    "restored)"
                )
            return TrackingLost(f"The host rejected change ID {token}: {why}.")


@dataclass
class VMwareSnapshot:
    consistency: str
    consistency_note: str
    vm_config: dict[str, Any]
    transport_note: str = ""
    warnings: list[str] = field(default_factory=list)
    disks: dict[str, VMwareDisk] = field(default_factory=dict)
    kept: bool = False

    def keep_tracking(self) -> None:
        # CBT state lives on the host: the new change IDs are in the restore point already.
        self.kept = True


def _enable_cbt(session: Session, vm: Any, name: str) -> tuple[str, str]:
    """Turn CBT on; returns (why this backup reads in full, a warning for the run)."""
    spec = vim.vm.ConfigSpec(changeTrackingEnabled=True)
    try:
        session.wait(vm.ReconfigVM_Task(spec), what="enabling CBT")
    except (VSphereError, vmodl.MethodFault) as exc:
        why = f"CBT is off and could not be turned on ({exc}); every backup reads in full."
        return why, f"{name}: {why}"
    why = "CBT was off on this VM; it was turned on for this backup."
    return why, f"{name}: CBT was off: turned it on (this backup reads allocated areas in full)."


def _consistency(quiesce: bool, props: dict[str, Any]) -> tuple[bool, str, str]:
    """(quiesce the snapshot?, consistency, note)."""
    if props.get("runtime.powerState") == "poweredOff":
        return False, "application", "Consistent: the VM is powered off, its disks are at rest."
    if not quiesce:
        return False, "crash", "Crash-consistent: the policy asks for no quiescing."
    if props.get("guest.toolsRunningStatus") != "guestToolsRunning":
        return (
            False,
            "crash",
            "Crash-consistent: VMware Tools are not running in the guest, so it cannot be "
            "quiesced.",
        )
    return True, "application", "Application-consistent: the guest was quiesced by VMware Tools."


def find_snapshots(tree: list[Any] | None, name: str | None = None) -> list[Any]:
    """Snapshot tree nodes, all of them or those named ``name``."""
    out = []
    for node in tree or []:
        if name is None or node.name == name:
            out.append(node)
        out.extend(find_snapshots(node.childSnapshotList, name))
    return out


def remove_named(session: Session, vm: Any, name: str) -> int:
    """Remove the VM's snapshots called ``name``; returns how many there were."""
    tree = retrieve_one(session, vm, ["snapshot.rootSnapshotList"]).get("snapshot.rootSnapshotList")
    nodes = find_snapshots(tree, name)
    for node in nodes:
        remove(session, node.snapshot, name)
    return len(nodes)


def remove(session: Session, snapshot: Any, name: str) -> None:
    task = snapshot.RemoveSnapshot_Task(removeChildren=False, consolidate=True)
    session.wait(task, what=f"removing snapshot {name}")


def _snap_disks(
    session: Session, snapshot: Any
) -> tuple[list[DiskInfo], list[DiskInfo], dict[str, Any]]:
    """(disks in the snapshot, disks it cannot hold, the snapshot's VM configuration)."""
    config = retrieve_one(session, snapshot, ["config"]).get("config")
    if config is None:
        raise VSphereError("the snapshot has no configuration")
    included: list[DiskInfo] = []
    excluded: list[DiskInfo] = []
    for disk in disks_of(config.hardware.device):
        (excluded if DiskMode(disk.mode) in EXCLUDED_DISK_MODES else included).append(disk)
    return included, excluded, capture(config)


def _create(session: Session, vm: Any, name: str, quiesce: bool) -> tuple[Any, str]:
    """Create the snapshot; a quiesced one that fails is taken again crash-consistent, and the
    second value then says why ("" when it went as asked)."""
    description = "backupconsole backup snapshot; removed when the backup ends"
    try:
        task = vm.CreateSnapshot_Task(
            name=name, description=description, memory=False, quiesce=quiesce
        )
        return session.wait(task, what="creating the backup snapshot"), ""
    except VSphereError as exc:
        if not quiesce:
            raise
        # Quiescing fails for guest reasons (VSS writers, a frozen file system): the backup
        # goes on crash-consistent rather than not at all, and says why.
        remove_named(session, vm, name)
        task = vm.CreateSnapshot_Task(
            name=name, description=description, memory=False, quiesce=False
        )
        snapshot = session.wait(task, what="creating the backup snapshot")
        return snapshot, f"Crash-consistent: quiescing failed ({exc})."


def _open(
    session: Session,
    vm: Any,
    snapshot: Any,
    props: dict[str, Any],
    lost: str,
    record: RecordArtifact,
    result: VMwareSnapshot,
) -> transports.Plan:
    """Fill ``result`` with the snapshot's configuration and disks, and choose the transport."""
    name = props.get("name", "")
    included, excluded, result.vm_config = _snap_disks(session, snapshot)
    for left_out in excluded:
        reason = EXCLUDED_DISK_MODES[DiskMode(left_out.mode)]
        result.warnings.append(f"{name} {left_out.label}: not backed up: {reason}")
    stores = datastores(session)
    _dc, dc_path = datacenter_of(session, vm)
    result.disks = {
        info.device_key: VMwareDisk(
            session, vm, snapshot, info, stores.get(info.datastore or ""), lost
        )
        for info in included
    }
    context = transports.Context(
        session=session,
        vm=vm,
        vm_name=name,
        host=props["runtime.host"]._moId if props.get("runtime.host") else None,
        datacenter=dc_path,
        disks=[d.snap_disk for d in result.disks.values()],
        record=record,
    )
    order = PREFERRED_TRANSPORTS.get()
    if order is None:
        order = tuple(resolve_options({})["transport_order"])
    plan, result.transport_note = transports.choose(order, context, transports.ProxyConfig.load())
    for disk in result.disks.values():
        disk.plan = plan
    return plan


@contextmanager
def backup_snapshot(
    session: Session,
    vm_row: Any,
    *,
    quiesce: bool,
    record: RecordArtifact,
) -> Iterator[VMwareSnapshot]:
    moref = vm_row.external_id
    paths = [
        "name",
        "runtime.host",
        "runtime.powerState",
        "config.changeTrackingEnabled",
        "guest.toolsRunningStatus",
    ]
    props = vm_properties(session, moref, paths, vm_row.name)
    vm = vm_ref(session, moref)
    result = VMwareSnapshot("crash", "", {})
    lost = ""
    if not props.get("config.changeTrackingEnabled"):
        lost, warning = _enable_cbt(session, vm, vm_row.name)
        result.warnings.append(warning)
    quiesced, result.consistency, result.consistency_note = _consistency(quiesce, props)
    snap_name = snapshot_name()
    forget = record("snapshot", {"vm": moref, "name": snap_name})
    snapshot: Any = None
    plan: transports.Plan | None = None
    try:
        snapshot, fallback = _create(session, vm, snap_name, quiesced)
        if fallback:
            result.consistency, result.consistency_note = "crash", fallback
        plan = _open(session, vm, snapshot, props, lost, record, result)
        yield result
    finally:
        try:
            if plan is not None:
                plan.close()
        finally:
            try:
                if snapshot is not None:
                    remove(session, snapshot, snap_name)
                else:  # creation failed or was interrupted: make sure none was left
                    remove_named(session, vm, snap_name)
            except (VSphereError, vmodl.MethodFault, OSError):
                pass  # stays recorded: the sweeper or the snapshot hunter removes it later
            else:
                forget()
