"""Restore runs: a disk to a file or to a vSphere datastore, or a whole VM as a new VM on a KVM
host or on vCenter/ESXi, with progress (bytes, rate, ETA) and a log. Connectors do the work
(inventory.adapters: restore_vm, restore_disk); this picks which and records the run."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from inventory.adapters import RestoreJob, RestoreOutcome, connector_for_config, get_connector
from inventory.models import Connection, Proxy
from jobs.choices import LogLevel, RunResult, RunState
from jobs.models import JobRun
from jobs.progress import Throttle, publish_run
from jobs.runstate import begin, cancelled, finish, log, set_state
from storage.engine.manifest import Manifest
from storage.engine.repository import Repository
from storage.engine.writer import Cancelled
from storage.engine_access import open_repository
from storage.models import RestorePoint


class RestoreProgress:
    """(bytes done, bytes in all) from a restore function → the run's counters, throttled; and
    where a cancel takes effect: it raises ``Cancelled`` into the restore, which removes what
    it had written (``storage.engine.target.new_file``, the connectors' own cleanup)."""

    def __init__(self, run: JobRun) -> None:
        self.run, self.throttle, self.started = run, Throttle(1.0), time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        if not self.throttle.ready(force=done >= total):
            return
        if done < total and cancelled(self.run):  # what is complete stays complete
            raise Cancelled("cancelled while restoring")
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


@dataclass
class _Job:
    """The restore at hand: its run, the restore point's repository and manifest, the options."""

    run: JobRun
    repo: Repository
    manifest: Manifest
    options: dict[str, Any]

    def for_connector(self) -> RestoreJob:
        return RestoreJob(
            self.repo,
            self.manifest,
            self.options,
            progress=RestoreProgress(self.run),
            log=lambda line: log(self.run, line),
        )


def _restore(job: _Job) -> RestoreOutcome:
    """Through the adapter interface: a VM or a disk to a connection is restored by the target
    connection's connector; a disk to a file by the connector that made the backup."""
    to_connection = job.options["what"] == "vm" or job.options.get("to") == "datastore"
    target = Connection.objects.get(pk=job.options["connection"]) if to_connection else None
    connector = (
        get_connector(target.kind) if target else connector_for_config(job.manifest.vm_config)
    )
    if connector is None:
        raise LookupError("no connector can restore this (its hypervisor is not supported here)")
    request = job.for_connector()
    if job.options["what"] == "vm":
        return connector.restore_vm(target, request)
    return connector.restore_disk(target, request)


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
        outcome = _restore(_Job(run, repo, manifest, run.options))
        message, notes = outcome.message, outcome.notes
        with transaction.atomic():
            for note in notes:
                log(run, note, level=LogLevel.WARNING)
            if notes:
                message += f" {len(notes)} warning(s): see the log."
            finish(run, RunResult.WARNING if notes else RunResult.SUCCEEDED, message)
    except Cancelled:
        with transaction.atomic():
            finish(run, RunResult.CANCELLED, "Cancelled by a user; what it had written is removed.")
    except Exception as exc:  # the run ends with the reason, whatever went wrong
        with transaction.atomic():
            log(run, f"{type(exc).__name__}: {exc}", level=LogLevel.ERROR)
            finish(run, RunResult.FAILED, f"Restore failed: {exc}")
