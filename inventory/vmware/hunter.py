"""The snapshot hunter: the product's own snapshots (named with its prefix) that no running backup
owns are leftovers of a crashed proxy, and every day they stay they grow and slow the VM down;
it removes them, detaching first any disk still hot-added to a proxy. It also lists the VMs
vSphere says need disk consolidation (a removal that left delta files behind)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone
from pyVmomi import vim, vmodl

from inventory.vmware import transports
from inventory.vmware.collector import retrieve
from inventory.vmware.session import Session, VSphereError, retrieve_one, session_for
from inventory.vmware.snapshot import PREFIX, find_snapshots, remove


@dataclass
class HuntResult:
    removed: list[str] = field(default_factory=list)  # "vm: snapshot"
    failed: list[str] = field(default_factory=list)  # "vm: snapshot: why"
    consolidation: list[str] = field(default_factory=list)  # names of VMs needing it
    consolidated: list[str] = field(default_factory=list)


def _hot_added(session: Session, files: set[str]) -> list[tuple[vim.VirtualMachine, list[str]]]:
    """VMs (proxies) that still have any of ``files`` attached."""
    out = []
    for found in retrieve(session, vim.VirtualMachine, ["config.hardware.device"]):
        names = [
            getattr(d.backing, "fileName", "")
            for d in found.get("config.hardware.device") or []
            if isinstance(d, vim.vm.device.VirtualDisk)
        ]
        attached = [n for n in names if n in files]
        if attached:
            out.append((found.obj, attached))
    return out


def hunt(
    session: Session,
    *,
    in_use: Collection[str] = (),
    older_than: timedelta = timedelta(minutes=10),
    consolidate: bool = False,
    now: datetime | None = None,
) -> HuntResult:
    """Remove the product's snapshots older than ``older_than`` whose names are not ``in_use``
    (snapshots of backups still running); with ``consolidate``, consolidate the VMs that need
    it once their leftovers are gone."""
    cutoff = (now or timezone.now()) - older_than
    result = HuntResult()
    vms = retrieve(
        session,
        vim.VirtualMachine,
        ["name", "snapshot.rootSnapshotList", "runtime.consolidationNeeded"],
    )
    for found in vms:
        name = found.get("name", found.moref)
        for node in find_snapshots(found.get("snapshot.rootSnapshotList")):
            if not node.name.startswith(PREFIX) or node.name in in_use:
                continue
            if node.createTime is not None and node.createTime > cutoff:
                continue  # young: may belong to a backup that has just started
            try:
                _free(session, node.snapshot)
                remove(session, node.snapshot, node.name)
            except (VSphereError, vmodl.MethodFault) as exc:
                result.failed.append(f"{name}: {node.name}: {getattr(exc, 'msg', '') or exc}")
            else:
                result.removed.append(f"{name}: {node.name}")
    for found in vms:  # as read before: a removal just made is consolidated by the next hunt
        if not found.get("runtime.consolidationNeeded"):
            continue
        name = found.get("name", found.moref)
        if consolidate:
            try:
                session.wait(found.obj.ConsolidateVMDisks_Task(), what=f"consolidating {name}")
            except (VSphereError, vmodl.MethodFault) as exc:
                result.failed.append(f"{name}: consolidation: {getattr(exc, 'msg', '') or exc}")
            else:
                result.consolidated.append(name)
                continue
        result.consolidation.append(name)
    return result


def _free(session: Session, snapshot: vim.vm.Snapshot) -> None:
    """Detach the snapshot's disks from any proxy they are still hot-added to: a removal would
    otherwise leave their files locked and the VM needing consolidation."""
    devices = retrieve_one(session, snapshot, ["config.hardware.device"]).get(
        "config.hardware.device", []
    )
    files = {
        getattr(d.backing, "fileName", "")
        for d in devices
        if isinstance(d, vim.vm.device.VirtualDisk)
    } - {""}
    if not files:
        return
    for proxy_vm, attached in _hot_added(session, files):
        transports.detach(session, proxy_vm, attached)


def hunt_connection(
    connection: Any, *, in_use: Collection[str], older_than: timedelta
) -> HuntResult:
    """The hunter on one vCenter/ESXi connection: leftovers removed, VMs consolidated."""
    return hunt(session_for(connection), in_use=in_use, older_than=older_than, consolidate=True)
