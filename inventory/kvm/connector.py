"""The KVM connector: libvirt for inventory and snapshots, pull-mode backups with checkpoints
(persistent dirty bitmaps in qcow2), disks read over NBD with the project's own client."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import libvirt

from inventory.adapters import (
    Capabilities,
    DiscoveredDisk,
    DiscoveredObject,
    DiscoveredVM,
    InventorySnapshot,
    RecordArtifact,
    RestoreJob,
    RestoreOutcome,
    TrackingLost,
)
from inventory.kvm import transport
from inventory.kvm.sources import NBDSource
from inventory.kvm.transport import Endpoint, TransportUnavailable

PREFIX = "bc-"  # our checkpoints; others' are left alone
_STATES = {
    libvirt.VIR_DOMAIN_RUNNING: "on",
    libvirt.VIR_DOMAIN_PAUSED: "on",
    libvirt.VIR_DOMAIN_SHUTOFF: "off",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended",
}


class KVMError(Exception):
    """libvirt said no; the message is for the run log."""


class KVMUnreachable(KVMError, ConnectionError):
    """libvirt did not answer: transient, so runs retry with backoff."""


def libvirt_uri(connection: Any) -> str:
    """``qemu:///…`` as given, a local socket path, or a host reached over SSH."""
    address = connection.address
    if address.startswith("qemu"):
        return str(address)
    if address.startswith("/"):
        return f"qemu:///system?socket={address}"
    user = f"{connection.username}@" if connection.username else ""
    return f"qemu+ssh://{user}{address}:{connection.port}/system"


def _open(connection: Any) -> libvirt.virConnect:
    try:
        return libvirt.open(libvirt_uri(connection))
    except libvirt.libvirtError as exc:
        raise KVMUnreachable(
            f"cannot connect to libvirt at {libvirt_uri(connection)}: {exc}"
        ) from exc


def _disks(xml: str) -> list[tuple[str, str, str, str]]:
    """(target, source path, driver type, disk device) of each disk in a domain XML."""
    root = ET.fromstring(xml)  # noqa: S314 - XML from libvirt
    out = []
    for disk in root.findall("./devices/disk"):
        target, source, driver = disk.find("target"), disk.find("source"), disk.find("driver")
        if target is None or disk.get("device") not in ("disk", "lun"):
            continue
        path = ""
        if source is not None:
            path = source.get("file") or source.get("dev") or source.get("name") or ""
        fmt = driver.get("type", "raw") if driver is not None else "raw"
        out.append((target.get("dev", ""), path, fmt, disk.get("device", "disk")))
    return out


@dataclass
class _Disk:
    device_key: str
    size: int
    token: str
    endpoint: Endpoint
    incremental_from: str | None
    lost_reason: str
    sources: list[NBDSource] = field(default_factory=list)

    @property
    def bitmap(self) -> str:
        return f"qemu:dirty-bitmap:backup-{self.device_key}"

    def source(self, transport: str | None = None) -> NBDSource:
        source = NBDSource(self.endpoint.connect(self.device_key, ["base:allocation"]))
        self.sources.append(source)
        return source

    def changes_since(self, token: str) -> list[tuple[int, int]] | TrackingLost:
        if self.incremental_from is None or token != self.incremental_from:
            return TrackingLost(self.lost_reason or f"no change tracking since {token}")
        probe = NBDSource(self.endpoint.connect(self.device_key, [self.bitmap]))
        try:
            return probe.dirty(self.bitmap)
        finally:
            probe.close()


@dataclass
class _Snapshot:
    consistency: str
    consistency_note: str
    vm_config: dict[str, Any]
    disks: dict[str, _Disk]
    transport: str = transport.LOCAL
    transport_note: str = ""
    warnings: list[str] = field(default_factory=list)
    kept: bool = False

    def keep_tracking(self) -> None:
        self.kept = True


class KVMConnector:
    kind = "kvm"
    config_key = "libvirt_xml"

    def capabilities(self, connection: Any) -> Capabilities:
        remote = transport.remote_host(libvirt_uri(connection)) is not None
        return Capabilities(
            change_tracking=True,
            quiesce=True,
            transports=(transport.NBDSSL,) if remote else (transport.LOCAL,),
        )

    def discover(self, connection: Any) -> InventorySnapshot:
        conn = _open(connection)
        try:
            host = conn.getHostname()
            objects = [DiscoveredObject(f"host:{host}", "host", host)]
            vms = [self._vm(dom, f"host:{host}") for dom in conn.listAllDomains()]
        finally:
            conn.close()
        return InventorySnapshot(objects=objects, vms=vms)

    def _vm(self, dom: libvirt.virDomain, host: str) -> DiscoveredVM:
        state, max_mem, _mem, vcpus, _cpu = dom.info()
        running = state in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_PAUSED)
        disks = []
        for target, path, fmt, device in _disks(dom.XMLDesc(0)):
            size = 0
            with suppress(libvirt.libvirtError):
                size = dom.blockInfo(target)[0] if running else 0
            mode = "passthrough" if device == "lun" else "persistent"
            disks.append(
                DiscoveredDisk(target, size, label=f"{target} ({fmt})", location=path, mode=mode)
            )
        return DiscoveredVM(
            external_id=dom.UUIDString(),
            instance_uuid=dom.UUIDString(),
            name=dom.name(),
            power_state=_STATES.get(state, "unknown"),
            cpus=vcpus,
            memory_mib=max_mem // 1024,
            host=host,
            disks=disks,
        )

    @contextmanager
    def backup_snapshot(
        self,
        connection: Any,
        vm: Any,
        *,
        quiesce: bool,
        record: RecordArtifact,
        since: dict[str, str],
    ) -> Iterator[_Snapshot]:
        conn = _open(connection)
        try:
            dom = conn.lookupByUUIDString(vm.external_id)
        except libvirt.libvirtError as exc:
            conn.close()
            raise KVMError(f"{vm.name} is not defined on {connection}: {exc}") from exc
        if not dom.isActive():
            conn.close()
            raise KVMError(f"{vm.name} is not running; KVM backups need the VM running (QEMU).")
        disks = [d for d in _disks(dom.XMLDesc(0)) if d[3] == "disk"]
        new = f"{PREFIX}{datetime.now(UTC):%Y%m%dT%H%M%S%f}"
        previous, lost = _incremental_base(dom, disks, since)
        workdir = Path(
            tempfile.mkdtemp(
                prefix="backupconsole-", dir=os.environ.get("BACKUPCONSOLE_SCRATCH_DIR")
            )
        )
        forget_job = record("backup-job", {"domain": dom.UUIDString(), "workdir": str(workdir)})
        forget_checkpoint = record("checkpoint", {"domain": dom.UUIDString(), "name": new})
        consistency, note = "crash", "Crash-consistent: the policy asks for no quiescing."
        snapshot: _Snapshot | None = None
        try:
            if quiesce:
                consistency, note = _freeze(dom)
            try:
                endpoint, previous, lost = _begin(
                    dom, disks, workdir, libvirt_uri(connection), new, previous, lost
                )
            finally:
                if consistency == "application":
                    with suppress(libvirt.libvirtError):
                        dom.fsThaw()
            snapshot = _Snapshot(
                consistency=consistency,
                consistency_note=note,
                vm_config={"libvirt_xml": dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)},
                transport=endpoint.transport,
                transport_note=endpoint.describe(),
                disks={
                    target: _Disk(
                        target,
                        dom.blockInfo(target)[0],
                        new,
                        endpoint,
                        previous if fmt == "qcow2" else None,
                        lost if fmt == "qcow2" else f"{target} is {fmt}: no dirty bitmap",
                    )
                    for target, _path, fmt, _dev in disks
                },
            )
            yield snapshot
        finally:
            if snapshot is not None:
                for disk in snapshot.disks.values():
                    for source in disk.sources:
                        with suppress(Exception):
                            source.close()
            try:
                _end_job(dom)
            except KVMError:
                pass  # the artifact stays recorded: the sweeper ends the job later
            else:
                forget_job()
            shutil.rmtree(workdir, ignore_errors=True)
            if snapshot is not None and snapshot.kept:
                _drop_older_checkpoints(dom, new)
            else:
                _delete_checkpoint(dom, new)
            forget_checkpoint()
            conn.close()

    def restore_vm(self, connection: Any, job: RestoreJob) -> RestoreOutcome:
        from inventory.kvm.restore import restore_vm_job  # it imports this module

        return restore_vm_job(connection, job)

    def restore_disk(self, connection: Any | None, job: RestoreJob) -> RestoreOutcome:
        from inventory.kvm.restore import restore_disk_job

        return restore_disk_job(connection, job)

    def remove_artifact(self, connection: Any, kind: str, data: dict[str, Any]) -> None:
        conn = _open(connection)
        try:
            try:
                dom = conn.lookupByUUIDString(data["domain"])
            except libvirt.libvirtError:
                dom = None  # the VM is gone, and its artifacts with it
            if kind == "backup-job":
                if dom is not None:
                    _end_job(dom)
                shutil.rmtree(data.get("workdir", ""), ignore_errors=True)
            elif kind == "checkpoint" and dom is not None:
                _delete_checkpoint(dom, data["name"])
        finally:
            conn.close()


def _incremental_base(
    dom: libvirt.virDomain, disks: list[tuple[str, str, str, str]], since: dict[str, str]
) -> tuple[str | None, str]:
    tokens = {since.get(target) for target, *_ in disks} - {None}
    if not tokens:
        return None, "First backup of this VM on this repository."
    if len(tokens) > 1:
        return None, "The disks' last backups come from different checkpoints."
    token = tokens.pop()
    assert token is not None
    try:
        dom.checkpointLookupByName(token)
    except libvirt.libvirtError:
        return None, f"Checkpoint {token} no longer exists (VM re-created or tracking reset)."
    return token, ""


def _freeze(dom: libvirt.virDomain) -> tuple[str, str]:
    try:
        dom.fsFreeze()
    except libvirt.libvirtError as exc:
        return (
            "crash",
            f"Crash-consistent: no QEMU guest agent answered ({exc.get_error_message()}).",
        )
    return "application", "Application-consistent: file systems frozen by the guest agent."


def _backup_xml(
    disks: list[tuple[str, str, str, str]],
    workdir: Path,
    endpoint: Endpoint,
    incremental: str | None,
) -> str:
    parts = [f"<incremental>{incremental}</incremental>" if incremental else ""]
    parts.append(endpoint.server_xml() + "<disks>")
    for target, _path, _fmt, _dev in disks:
        scratch = quoteattr(str(workdir / f"scratch-{target}.qcow2"))
        parts.append(
            f"<disk name='{target}' backup='yes' type='file'><scratch file={scratch}/></disk>"
        )
    return "<domainbackup mode='pull'>" + "".join(parts) + "</disks></domainbackup>"


def _checkpoint_xml(name: str, disks: list[tuple[str, str, str, str]]) -> str:
    items = "".join(
        f"<disk name='{t}' checkpoint='{'bitmap' if fmt == 'qcow2' else 'no'}'/>"
        for t, _p, fmt, _d in disks
    )
    return f"<domaincheckpoint><name>{name}</name><disks>{items}</disks></domaincheckpoint>"


def _begin(
    dom: libvirt.virDomain,
    disks: list[tuple[str, str, str, str]],
    workdir: Path,
    uri: str,
    new: str,
    previous: str | None,
    lost: str,
) -> tuple[Endpoint, str | None, str]:
    checkpoint = _checkpoint_xml(new, disks)
    try:
        endpoints = list(transport.candidates(uri, workdir))
    except TransportUnavailable as exc:
        raise KVMError(str(exc)) from exc
    for endpoint in endpoints:
        if previous is not None:
            try:
                dom.backupBegin(_backup_xml(disks, workdir, endpoint, previous), checkpoint)
                return endpoint, previous, ""
            except libvirt.libvirtError as exc:
                if transport.port_in_use(exc.get_error_message()):
                    continue
                # Bitmaps left inconsistent (QEMU killed, host crash): read in full and repair
                # by starting a fresh checkpoint; say why.
                lost = f"Change tracking since {previous} is unusable: {exc.get_error_message()}"
                previous = None
                _delete_checkpoint(dom, new)
                _drop_checkpoints(dom, keep=None)
        try:
            dom.backupBegin(_backup_xml(disks, workdir, endpoint, None), checkpoint)
        except libvirt.libvirtError as exc:
            if transport.port_in_use(exc.get_error_message()):
                continue
            raise KVMError(f"libvirt refused the backup: {exc.get_error_message()}") from exc
        return endpoint, None, lost
    ports = transport.PORTS
    raise KVMError(f"no free NBD port on the host in {ports.start}-{ports.stop - 1}")


def _end_job(dom: libvirt.virDomain, *, wait: float = 15.0) -> None:
    """Abort the domain's backup job and wait until libvirt says it is gone."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            if not dom.isActive() or dom.jobInfo()[0] == libvirt.VIR_DOMAIN_JOB_NONE:
                return
            dom.abortJob()
        except libvirt.libvirtError:
            pass  # racing with the job's own end; look again
        time.sleep(0.1)
    raise KVMError(f"the backup job of {dom.name()} did not end within {wait:g} s")


def _delete_checkpoint(dom: libvirt.virDomain, name: str) -> None:
    try:
        checkpoint = dom.checkpointLookupByName(name)
    except libvirt.libvirtError:
        return
    try:
        checkpoint.delete()
    except libvirt.libvirtError:
        # Its bitmaps are gone or broken: forget the metadata at least.
        with suppress(libvirt.libvirtError):
            checkpoint.delete(libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY)


def _drop_older_checkpoints(dom: libvirt.virDomain, keep: str) -> None:
    _drop_checkpoints(dom, keep=keep)


def _drop_checkpoints(dom: libvirt.virDomain, keep: str | None) -> None:
    """Our checkpoints other than ``keep``: only the newest is needed to build on."""
    for checkpoint in dom.listAllCheckpoints():
        name = checkpoint.getName()
        if name.startswith(PREFIX) and name != keep:
            _delete_checkpoint(dom, name)
