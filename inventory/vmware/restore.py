"""Restores to vSphere: a whole VM as a new VM (its disks uploaded to a datastore over the
HTTP file interface, then the VM created from the configuration saved in the restore point), or
one disk to a datastore or to a local raw file. Nothing existing is ever overwritten."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyVmomi import vim, vmodl

from inventory.adapters import RestoreJob, RestoreOutcome
from inventory.vmware.collector import retrieve
from inventory.vmware.files import DatastoreHTTP, folder_url
from inventory.vmware.placement import DatastoreInfo, datacenter_of, datastore_named
from inventory.vmware.session import Session, VSphereError, retrieve_one, session_for
from inventory.vmware.vmconfig import KEY, create_spec, descriptor
from storage.engine.manifest import Manifest
from storage.engine.reader import DiskImage, restore_disk_file
from storage.engine.repository import Repository

logger = logging.getLogger(__name__)
PIECE = 4 * 1024 * 1024  # bytes per read from the repository while uploading
Progress = Callable[[int, int], None]  # (bytes done, bytes in all)


@dataclass
class RestoredVM:
    moref: str
    name: str
    disk_files: dict[str, str]  # device key → "[datastore] path.vmdk"
    notes: list[str] = field(default_factory=list)


def _pieces(image: DiskImage, done: Callable[[int], None]) -> Iterator[bytes]:
    for offset in range(0, image.size, PIECE):
        data = image.read(offset, min(PIECE, image.size - offset))
        done(len(data))
        yield data


def upload_disk(
    session: Session,
    repo: Repository,
    manifest: Manifest,
    device_key: str,
    *,
    datacenter: str,
    datastore: DatastoreInfo,
    path: str,
    progress: Callable[[int], None] = lambda _n: None,
) -> str:
    """Upload one disk as ``path`` (``folder/name.vmdk``: descriptor plus ``-flat`` data);
    returns its datastore path. Refuses to replace an existing file."""
    if not path.endswith(".vmdk"):
        raise VSphereError(f"{path}: a disk path ends in .vmdk")
    flat = path[: -len(".vmdk")] + "-flat.vmdk"
    files = DatastoreHTTP(session)
    try:
        for name in (path, flat):
            if files.exists(folder_url(datacenter, datastore.name, name)):
                raise VSphereError(f"[{datastore.name}] {name} exists already; not overwritten")
        image = DiskImage.open(repo, manifest, device_key)
        try:
            files.put(
                folder_url(datacenter, datastore.name, flat), _pieces(image, progress), image.size
            )
            text = descriptor(flat.rsplit("/", 1)[-1], image.size)
            files.put(folder_url(datacenter, datastore.name, path), text, len(text))
        except BaseException:  # failed or cancelled: what was uploaded goes again
            remove_files(session, datastore, [f"[{datastore.name}] {n}" for n in (flat, path)])
            raise
    finally:
        files.close()
    return f"[{datastore.name}] {path}"


def remove_files(session: Session, datastore: DatastoreInfo, names: list[str]) -> None:
    """Delete datastore files or folders a failed or cancelled restore created. Best effort, in
    an error path: a file that is not there is fine, and a failure is logged, not raised over
    the error that is being reported."""
    datacenter, _path = datacenter_of(session, datastore.obj)
    manager = session.content.fileManager
    for name in names:
        try:
            session.wait(
                manager.DeleteDatastoreFile_Task(name=name, datacenter=datacenter),
                what=f"removing {name}",
            )
        except (vmodl.MethodFault, VSphereError) as exc:
            if "FileNotFound" not in f"{type(exc).__name__} {exc}":
                logger.warning("could not remove %s after a failed restore: %s", name, exc)


def restore_disk_to_datastore(
    connection: Any,
    repo: Repository,
    manifest: Manifest,
    device_key: str,
    *,
    datastore: str,
    path: str,
    progress: Progress | None = None,
) -> str:
    session = session_for(connection)
    store = datastore_named(session, datastore)
    _dc, dc_path = datacenter_of(session, store.obj)
    total = manifest.disk(device_key).size
    done = [0]

    def step(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(done[0], total)

    return upload_disk(
        session,
        repo,
        manifest,
        device_key,
        datacenter=dc_path,
        datastore=store,
        path=path,
        progress=step,
    )


def _placement(session: Session, store: DatastoreInfo) -> tuple[Any, Any, Any]:
    """(VM folder, resource pool, host) for a new VM on ``store``: a host that mounts it."""
    datacenter, _path = datacenter_of(session, store.obj)
    hosts = retrieve_one(session, store.obj, ["host"]).get("host") or []
    for mount in hosts:
        host = mount.key
        props = retrieve_one(session, host, ["parent", "runtime.connectionState"])
        if props.get("runtime.connectionState") not in (None, "connected"):
            continue
        pool = retrieve_one(session, props["parent"], ["resourcePool"]).get("resourcePool")
        if pool is not None:
            folder = retrieve_one(session, datacenter, ["vmFolder"])["vmFolder"]
            return folder, pool, host
    raise VSphereError(f"no connected host mounts datastore {store.name}")


def _networks(session: Session, datacenter: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """The datacenter's networks by name, and distributed port groups' switch UUIDs by key."""
    networks = {
        found.get("name", ""): found.obj
        for found in retrieve(session, vim.Network, ["name"], root=datacenter)
    }
    switches = {
        found.moref: found.get("uuid", "")
        for found in retrieve(session, vim.DistributedVirtualSwitch, ["uuid"], root=datacenter)
    }
    portgroups = {
        found.get("key", ""): switches.get(found.get("config.distributedVirtualSwitch")._moId, "")
        for found in retrieve(
            session,
            vim.dvs.DistributedVirtualPortgroup,
            ["key", "config.distributedVirtualSwitch"],
            root=datacenter,
        )
        if found.get("config.distributedVirtualSwitch") is not None
    }
    return networks, portgroups


def restore_vm(
    connection: Any,
    repo: Repository,
    manifest: Manifest,
    *,
    name: str,
    datastore: str,
    power_on: bool = False,
    progress: Progress | None = None,
) -> RestoredVM:
    """A new VM called ``name`` on ``datastore``, created from the saved configuration with its
    disks restored from the restore point. The original VM is not touched."""
    saved = manifest.vm_config.get(KEY)
    if not saved:
        raise VSphereError("the restore point holds no vSphere VM configuration")
    session = session_for(connection)
    store = datastore_named(session, datastore)
    _dc, dc_path = datacenter_of(session, store.obj)
    folder, pool, host = _placement(session, store)
    if session.content.searchIndex.FindChild(folder, name) is not None:
        raise VSphereError(f"a VM named {name} exists already")
    try:
        session.content.fileManager.MakeDirectory(f"[{store.name}] {name}", _dc, True)
    except vim.fault.FileAlreadyExists as exc:
        raise VSphereError(f"[{store.name}] {name} exists already; not overwritten") from exc
    total = sum(d.size for d in manifest.disks)
    done = [0]

    def step(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(done[0], total)

    disk_files = {}
    try:
        for index, disk in enumerate(manifest.disks):
            disk_files[disk.device_key] = upload_disk(
                session,
                repo,
                manifest,
                disk.device_key,
                datacenter=dc_path,
                datastore=store,
                path=f"{name}/{name}_{index}.vmdk",
                progress=step,
            )
        networks, portgroups = _networks(session, _dc)
        spec, notes = create_spec(
            saved,
            name=name,
            datastore=store.name,
            disk_files=disk_files,
            networks=networks,
            portgroups=portgroups,
        )
        vm = _create_vm(session, folder, spec, pool, host, name)
    except BaseException:  # no VM: the folder made for it, and its disks, go again
        remove_files(session, store, [f"[{store.name}] {name}"])
        raise
    if power_on:
        try:
            session.wait(vm.PowerOnVM_Task(), what=f"powering on {name}")
        except vmodl.MethodFault as exc:  # the VM is restored; only starting it failed
            raise VSphereError(f"{name} was restored but did not power on: {exc}") from exc
    return RestoredVM(vm._moId, name, disk_files, notes)


def _create_vm(session: Session, folder: Any, spec: Any, pool: Any, host: Any, name: str) -> Any:
    try:
        return session.wait(
            folder.CreateVM_Task(config=spec, pool=pool, host=host), what=f"creating VM {name}"
        )
    except vmodl.MethodFault as exc:
        raise VSphereError(f"creating VM {name}: {getattr(exc, 'msg', '') or exc}") from exc


def restore_vm_job(connection: Any, job: RestoreJob) -> RestoreOutcome:
    """The adapter's restore_vm: a new VM on ``connection`` with its disks on a datastore."""
    name, datastore = job.options["name"], job.options["datastore"]
    job.log(
        f"Creating VM {name} on {connection}: {len(job.manifest.disks)} disk(s), "
        f"{job.size() / 2**30:.2f} GiB, uploaded to datastore {datastore}."
    )
    restored = restore_vm(
        connection,
        job.repo,
        job.manifest,
        name=name,
        datastore=datastore,
        power_on=bool(job.options.get("start")),
        progress=job.progress,
    )
    for key, file in restored.disk_files.items():
        job.log(f"Disk {key} → {file}.")
    started = " and powered on" if job.options.get("start") else ""
    return RestoreOutcome(
        f"Restored as the new VM {name} ({restored.moref}) on {connection}{started}; it appears "
        "in the inventory with the next sync.",
        restored.notes,
    )


def restore_disk_job(connection: Any | None, job: RestoreJob) -> RestoreOutcome:
    """The adapter's restore_disk: to a datastore of ``connection``, or a raw file here."""
    disk = job.options["disk"]
    size = f"{job.size(disk) / 2**30:.2f} GiB"
    if connection is None:
        target = Path(job.options["path"])
        job.log(f"Writing disk {disk} ({size}) to {target} on this proxy.")
        restore_disk_file(job.repo, job.manifest, disk, target, progress=job.progress)
        return RestoreOutcome(f"Disk {disk} restored to {target}.")
    job.log(f"Uploading disk {disk} ({size}) to {connection}.")
    where = restore_disk_to_datastore(
        connection,
        job.repo,
        job.manifest,
        disk,
        datastore=job.options["datastore"],
        path=job.options["path"],
        progress=job.progress,
    )
    return RestoreOutcome(f"Disk {disk} restored to {where} on {connection}.")
