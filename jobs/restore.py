"""Restore runs: a disk to a file, or a whole VM as a new domain, with progress and a log."""

from __future__ import annotations

from pathlib import Path

from django.db import transaction

from inventory.models import Connection, Proxy
from jobs.choices import LogLevel, RunResult, RunState
from jobs.runstate import begin, finish, log, set_state
from storage.engine_access import open_repository
from storage.models import RestorePoint


def execute_restore(run_pk: int, *, proxy: Proxy | None = None) -> None:
    run = begin(run_pk, proxy)
    if run is None:
        return
    options = run.options
    try:
        point = RestorePoint.objects.select_related("repository").get(pk=options["restore_point"])
        repo = open_repository(point.repository)
        manifest = repo.read_manifest(point.manifest_path)
        with transaction.atomic():
            set_state(run, RunState.WORKING)
        from inventory.kvm.restore import restore_disk_file, restore_vm

        if options["what"] == "disk":
            target = restore_disk_file(
                repo, manifest, options["disk"], Path(options["path"]), options.get("format", "raw")
            )
            message = f"Disk {options['disk']} of {point} restored to {target}."
        else:
            connection = Connection.objects.get(pk=options["connection"])
            uuid = restore_vm(
                connection,
                repo,
                manifest,
                name=options["name"],
                directory=Path(options["path"]),
                start=bool(options.get("start")),
            )
            message = f"{point} restored as {options['name']} ({uuid}) on {connection}."
        with transaction.atomic():
            finish(run, RunResult.SUCCEEDED, message)
    except Exception as exc:  # the run ends with the reason, whatever went wrong
        with transaction.atomic():
            log(run, f"{type(exc).__name__}: {exc}", level=LogLevel.ERROR)
            finish(run, RunResult.FAILED, f"Restore failed: {exc}")
