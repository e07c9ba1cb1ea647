"""Restores to KVM: a disk to a raw or qcow2 file, or a whole VM as a new libvirt domain defined
from the configuration saved in the restore point, with its disks written from the backup."""

from __future__ import annotations

import shutil
import subprocess
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt

from inventory.adapters import RestoreJob, RestoreOutcome
from inventory.kvm.connector import KVMError, _open
from storage.engine.manifest import Manifest
from storage.engine.reader import restore_disk
from storage.engine.reader import restore_disk_file as engine_restore_disk_file
from storage.engine.repository import Repository
from storage.engine.target import new_file


def restore_disk_file(
    repo: Repository,
    manifest: Manifest,
    device_key: str,
    target: Path,
    fmt: str = "raw",
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """One disk to a sparse raw file, or to qcow2 (written raw, then converted). Nothing is left
    at ``target`` unless it all worked (``new_file``)."""
    if fmt not in ("raw", "qcow2"):
        raise KVMError(f"unknown disk format {fmt!r} (raw or qcow2)")
    if fmt == "raw":
        return engine_restore_disk_file(repo, manifest, device_key, target, progress=progress)
    with new_file(target) as partial:
        raw = target.with_name(partial.name + ".raw")
        try:
            restore_disk(repo, manifest, device_key, raw, progress=progress)
            qemu_img = shutil.which("qemu-img")
            if qemu_img is None:
                raise KVMError("qemu-img is not installed on this proxy (Debian: qemu-utils)")
            subprocess.run(  # noqa: S603 - fixed program, arguments are paths we chose
                [qemu_img, "convert", "-O", "qcow2", str(raw), str(partial)],
                check=True,
                capture_output=True,
                text=True,
            )
        except subprocess.CalledProcessError as exc:
            raise KVMError(f"qemu-img could not write {target}: {exc.stderr.strip()}") from exc
        finally:
            raw.unlink(missing_ok=True)
    return target


def restore_vm(
    connection: Any,
    repo: Repository,
    manifest: Manifest,
    *,
    name: str,
    directory: Path,
    start: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> str:
    """Define a new domain from the saved XML; its disks become qcow2 files in ``directory``.
    Returns the new domain's UUID. The original VM, if it still exists, is not touched; if the
    restore fails or is cancelled, the disks it wrote are removed again."""
    saved = manifest.vm_config.get("libvirt_xml")
    if not saved:
        raise KVMError("the restore point holds no libvirt definition")
    root = ET.fromstring(saved)  # noqa: S314 - XML we saved from libvirt
    root.find("name").text = name  # type: ignore[union-attr]
    element = root.find("uuid")
    if element is not None:
        element.text = str(uuid.uuid4())
    # MAC addresses must not clash with the original VM's: libvirt generates new ones.
    for mac_parent in root.findall("./devices/interface"):
        mac = mac_parent.find("mac")
        if mac is not None:
            mac_parent.remove(mac)
    directory.mkdir(parents=True, exist_ok=True)
    total, before = sum(d.size for d in manifest.disks), 0
    written: list[Path] = []
    try:
        for disk in root.findall("./devices/disk"):
            target = disk.find("target")
            if target is None or disk.get("device") != "disk":
                continue
            key = target.get("dev", "")
            path = directory / f"{name}-{key}.qcow2"
            restore_disk_file(repo, manifest, key, path, "qcow2", _offset(progress, before, total))
            written.append(path)
            before += manifest.disk(key).size
            disk.set("type", "file")
            source = disk.find("source")
            if source is None:
                source = ET.SubElement(disk, "source")
            source.attrib.clear()
            source.set("file", str(path))
            driver = disk.find("driver")
            if driver is not None:
                driver.set("type", "qcow2")
        domain_uuid = _define(connection, root, name)
    except BaseException:
        for path in written:  # a VM that was not defined leaves no disks behind
            path.unlink(missing_ok=True)
        raise
    if start:
        _start(connection, name)
    return domain_uuid


def _offset(
    progress: Callable[[int, int], None] | None, before: int, total: int
) -> Callable[[int, int], None] | None:
    """One disk's progress as part of the whole VM's."""
    if progress is None:
        return None
    return lambda done, _disk_total: progress(before + done, total)


def _define(connection: Any, root: ET.Element, name: str) -> str:
    conn = _open(connection)
    try:
        try:
            conn.lookupByName(name)
        except libvirt.libvirtError:
            pass
        else:
            raise KVMError(f"a domain named {name} exists already")
        return str(conn.defineXML(ET.tostring(root, encoding="unicode")).UUIDString())
    finally:
        conn.close()


def _start(connection: Any, name: str) -> None:
    conn = _open(connection)
    try:
        conn.lookupByName(name).create()
    except libvirt.libvirtError as exc:  # the VM is restored; only starting it failed
        raise KVMError(f"{name} was restored but did not start: {exc}") from exc
    finally:
        conn.close()


def restore_vm_job(connection: Any, job: RestoreJob) -> RestoreOutcome:
    """The adapter's restore_vm: a new domain on ``connection``, its disks in ``path``."""
    name, directory = job.options["name"], job.options["path"]
    job.log(f"Defining {name} on {connection}; its disks go to {directory}.")
    uuid = restore_vm(
        connection,
        job.repo,
        job.manifest,
        name=name,
        directory=Path(directory),
        start=bool(job.options.get("start")),
        progress=job.progress,
    )
    job.progress(job.size(), job.size())
    return RestoreOutcome(f"Restored as {name} ({uuid}) on {connection}.")


def restore_disk_job(connection: Any | None, job: RestoreJob) -> RestoreOutcome:
    """The adapter's restore_disk: KVM disks go to a raw or qcow2 file on the proxy."""
    if connection is not None:
        raise KVMError("a KVM disk is restored to a file on the proxy, not to a host's storage")
    disk, target = job.options["disk"], Path(job.options["path"])
    job.log(f"Writing disk {disk} ({job.size(disk) / 2**30:.2f} GiB) to {target} on this proxy.")
    fmt = job.options.get("format", "raw")
    restore_disk_file(job.repo, job.manifest, disk, target, fmt, job.progress)
    job.progress(job.size(disk), job.size(disk))
    return RestoreOutcome(f"Disk {disk} restored to {target}.")
