"""Restore runs: a disk to a file or to a vSphere datastore, or a whole VM as a new VM on a KVM
host or on vCenter/ESXi, with progress (bytes, rate, ETA) and a log. The target connection's
kind picks the connector's restore function; for a file, the kind of the saved VM."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.db import transaction

from inventory.models import Connection, Proxy
from inventory.vmware.vmconfig import KEY as VSPHERE_CONFIG
from jobs.choices import LogLevel, RunResult, RunState
from jobs.models import JobRun
from jobs.progress import Throttle, publish_run
from jobs.runstate import begin, finish, log, set_state
from storage.engine.manifest import Manifest
from storage.engine.repository import Repository
from storage.engine_access import open_repository
from storage.models import RestorePoint
from storage.restore_targets import VSPHERE, family

GiB = 2**30


class _Progress:
    """(bytes done, bytes in all) from a restore function → the run's counters, throttled."""

    def __init__(self, run: JobRun) -> None:
        self.run, self.throttle, self.started = run, Throttle(1.0), time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        if not self.throttle.ready(force=done >= total):
            return
        rate = int(done / max(time.monotonic() - self.started, 1e-6))
        fields = {
            "bytes_done": done,
            "bytes_total": total,
            "rate_bps": rate,
            "eta_seconds": int((total - done) / rate) if rate else None,
        }
        for name, value in fields.items():  # the run saved at the end keeps them
            setattr(self.run, name, value)
        JobRun.objects.filter(pk=self.run.pk).update(**fields)
        publish_run(self.run.pk)


def _size(size: int) -> str:
    return f"{size / GiB:.2f} GiB"


@dataclass
class _Job:
    """The restore at hand: its run, the restore point's repository and manifest, the options."""

    run: JobRun
    repo: Repository
    manifest: Manifest
    options: dict[str, Any]

    def target(self) -> Connection:
        return Connection.objects.get(pk=self.options["connection"])

    def total(self) -> int:
        return sum(d.size for d in self.manifest.disks)


def _disk_to_datastore(job: _Job) -> tuple[str, list[str]]:
    from inventory.vmware.restore import restore_disk_to_datastore

    connection, disk = job.target(), job.options["disk"]
    size = job.manifest.disk(disk).size
    log(job.run, f"Uploading disk {disk} ({_size(size)}) to {connection}.")
    where = restore_disk_to_datastore(
        connection,
        job.repo,
        job.manifest,
        disk,
        datastore=job.options["datastore"],
        path=job.options["path"],
        progress=_Progress(job.run),
    )
    return f"Disk {disk} restored to {where} on {connection}.", []


def _disk_to_file(job: _Job) -> tuple[str, list[str]]:
    disk, target = job.options["disk"], Path(job.options["path"])
    size = job.manifest.disk(disk).size
    progress = _Progress(job.run)
    log(job.run, f"Writing disk {disk} ({_size(size)}) to {target} on this proxy.")
    if VSPHERE_CONFIG in job.manifest.vm_config:  # a vSphere VM's point: its connector writes it
        from inventory.vmware.restore import restore_disk_file as vsphere_disk_file

        vsphere_disk_file(job.repo, job.manifest, disk, target, progress=progress)
    else:
        from inventory.kvm.restore import restore_disk_file

        progress(0, size)
        restore_disk_file(job.repo, job.manifest, disk, target, job.options.get("format", "raw"))
        progress(size, size)
    return f"Disk {disk} restored to {target}.", []


def _vm_to_vsphere(job: _Job) -> tuple[str, list[str]]:
    from inventory.vmware.restore import restore_vm

    connection, name, datastore = job.target(), job.options["name"], job.options["datastore"]
    disks = len(job.manifest.disks)
    log(
        job.run,
        f"Creating VM {name} on {connection}: {disks} disk(s), {_size(job.total())}, "
        f"uploaded to datastore {datastore}.",
    )
    restored = restore_vm(
        connection,
        job.repo,
        job.manifest,
        name=name,
        datastore=datastore,
        power_on=bool(job.options.get("start")),
        progress=_Progress(job.run),
    )
    for key, file in restored.disk_files.items():
        log(job.run, f"Disk {key} → {file}.")
    started = " and powered on" if job.options.get("start") else ""
    return (
        f"Restored as the new VM {name} ({restored.moref}) on {connection}{started}; it appears "
        "in the inventory with the next sync.",
        restored.notes,
    )


def _vm_to_kvm(job: _Job) -> tuple[str, list[str]]:
    from inventory.kvm.restore import restore_vm

    connection, name, directory = job.target(), job.options["name"], job.options["path"]
    progress = _Progress(job.run)  # libvirt's restore reports no progress: before and after
    log(job.run, f"Defining {name} on {connection}; its disks go to {directory}.")
    progress(0, job.total())
    uuid = restore_vm(
        connection,
        job.repo,
        job.manifest,
        name=name,
        directory=Path(directory),
        start=bool(job.options.get("start")),
    )
    progress(job.total(), job.total())
    return f"Restored as {name} ({uuid}) on {connection}.", []


def _restore(job: _Job) -> tuple[str, list[str]]:
    """Dispatch on what is restored and on the target connection's kind."""
    if job.options["what"] == "disk":
        if job.options.get("to") == "datastore":
            return _disk_to_datastore(job)
        return _disk_to_file(job)
    if family(job.target().kind) == VSPHERE:
        return _vm_to_vsphere(job)
    return _vm_to_kvm(job)


def execute_restore(run_pk: int, *, proxy: Proxy | None = None) -> None:
    run = begin(run_pk, proxy)
    if run is None:
        return
    try:
        point = RestorePoint.objects.select_related("repository").get(
            pk=run.options["restore_point"]
        )
        repo = open_repository(point.repository)
        manifest = repo.read_manifest(point.manifest_path)
        with transaction.atomic():
            set_state(run, RunState.WORKING)
            log(run, f"Restoring from {point} in {point.repository.name}.")
        message, notes = _restore(_Job(run, repo, manifest, run.options))
        with transaction.atomic():
            for note in notes:
                log(run, note, level=LogLevel.WARNING)
            if notes:
                message += f" {len(notes)} warning(s): see the log."
            finish(run, RunResult.WARNING if notes else RunResult.SUCCEEDED, message)
    except Exception as exc:  # the run ends with the reason, whatever went wrong
        with transaction.atomic():
            log(run, f"{type(exc).__name__}: {exc}", level=LogLevel.ERROR)
            finish(run, RunResult.FAILED, f"Restore failed: {exc}")
