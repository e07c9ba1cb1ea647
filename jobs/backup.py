"""Back up one VM: snapshot → changed extents → storage writer → commit → catalog → cleanup.

Every hypervisor artifact is recorded (SnapshotArtifact) before the connector creates it and
marked removed after; the connector's context manager removes them whatever happened.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from django.db import transaction
from django.utils import timezone

from inventory.adapters import BackupSnapshot, Connector, TrackingLost, transport_preference
from inventory.models import VirtualMachine
from jobs.choices import CHANGED_ONLY_NOTE, LogLevel, Phase, TaskKind, TaskState
from jobs.models import JobRun, RunTask, SnapshotArtifact
from jobs.options import resolve_options
from jobs.progress import Throttle, publish_run
from jobs.runstate import cancelled, log
from storage.catalog import record_manifest
from storage.choices import USABLE_POINT_STATES
from storage.engine.manifest import Manifest
from storage.engine.repository import Repository as EngineRepository
from storage.engine.writer import DiskInput, Progress, write_restore_point
from storage.engine_access import vm_key_for
from storage.models import RestorePoint


def _recorder(
    run: JobRun, vm: VirtualMachine
) -> Callable[[str, dict[str, Any]], Callable[[], None]]:
    def record(kind: str, data: dict[str, Any]) -> Callable[[], None]:
        artifact = SnapshotArtifact.objects.create(
            connection=vm.connection, vm=vm, run=run, kind=kind, data=data
        )

        def forget() -> None:
            SnapshotArtifact.objects.filter(pk=artifact.pk).update(
                removed_at=timezone.now(), note=f"removed by run #{run.pk}"
            )

        return forget

    return record


def _phase(run: JobRun, parent: RunTask, phase: str, position: int) -> RunTask:
    task = RunTask.objects.create(
        run=run,
        parent=parent,
        kind=TaskKind.PHASE,
        phase=phase,
        name=Phase(phase).label,
        vm=parent.vm,
        state=TaskState.RUNNING,
        started_at=timezone.now(),
        position=position,
    )
    publish_run(run.pk)
    return task


def _end(task: RunTask, state: str = TaskState.SUCCEEDED, message: str = "") -> None:
    task.state, task.message, task.finished_at = state, message, timezone.now()
    task.save(update_fields=["state", "message", "finished_at"])
    publish_run(task.run_id)


class _Reporter:
    """Storage writer counters → throttled task updates (bytes, rate, ETA, busy, bottleneck)."""

    def __init__(self, run: JobRun, tasks: dict[str, RunTask]) -> None:
        self.run, self.tasks, self.throttle = run, tasks, Throttle(1.0)

    def __call__(self, p: Progress) -> None:
        final = p.bytes_done >= p.bytes_total
        if not self.throttle.ready(force=final):
            return
        task = self.tasks[p.device_key]
        elapsed = max(p.elapsed, 1e-6)
        rate = int(p.bytes_done / elapsed)
        shares = {
            "source": min(p.read_seconds / elapsed, 1.0),
            "proxy": min(p.process_seconds / elapsed, 1.0),
            "repository": min(p.store_seconds / elapsed, 1.0),
        }
        task.bytes_done, task.bytes_total, task.rate_bps = p.bytes_done, p.bytes_total, rate
        task.eta_seconds = int((p.bytes_total - p.bytes_done) / rate) if rate else None
        task.busy_source, task.busy_proxy, task.busy_repository = (
            shares["source"],
            shares["proxy"],
            shares["repository"],
        )
        task.bottleneck = max(shares, key=lambda k: shares[k])
        task.save(
            update_fields=[
                "bytes_done",
                "bytes_total",
                "rate_bps",
                "eta_seconds",
                "busy_source",
                "busy_proxy",
                "busy_repository",
                "bottleneck",
            ]
        )
        publish_run(self.run.pk)


def parent_point(
    repository_model: Any, engine: EngineRepository, vm: VirtualMachine
) -> Manifest | None:
    """The newest usable restore point of this VM in the repository, to build on."""
    point = (
        RestorePoint.objects.filter(
            repository=repository_model,
            vm_key=vm_key_for(vm),
            state__in=USABLE_POINT_STATES,
        )
        .order_by("-created_at")
        .first()
    )
    return engine.read_manifest(point.manifest_path) if point else None


def _inputs(
    snapshot: BackupSnapshot,
    vm: VirtualMachine,
    parent: Manifest | None,
    run: JobRun,
    vm_task: RunTask,
) -> list[DiskInput]:
    inputs = []
    for disk in vm.disks.all():
        if disk.excluded:
            continue
        snap_disk = snapshot.disks.get(disk.device_key)
        if snap_disk is None:
            log(
                run,
                f"{vm.name}: disk {disk.device_key} is not in the snapshot",
                level=LogLevel.WARNING,
                task=vm_task,
            )
            continue
        previous = None
        if parent is not None:
            previous = next((d for d in parent.disks if d.device_key == disk.device_key), None)
        reason, extents = "", None
        if previous is None:
            reason = "First backup of this disk."
        elif not previous.change_token:
            reason = "The previous restore point has no change-tracking token."
        else:
            changes = snap_disk.changes_since(previous.change_token)
            if isinstance(changes, TrackingLost):
                reason = changes.reason
            else:
                extents = changes
        if reason and previous is not None:
            log(
                run,
                f"{vm.name} {disk.device_key}: read in full: {reason}",
                level=LogLevel.WARNING,
                task=vm_task,
            )
        inputs.append(
            DiskInput(
                device_key=disk.device_key,
                source=snap_disk.source(),
                changed_extents=extents,
                label=disk.label,
                change_token=snap_disk.token,
                full_read_reason=reason,
            )
        )
    return inputs


def back_up_vm(
    run: JobRun, vm_task: RunTask, connector: Connector, engine: EngineRepository
) -> RestorePoint:
    vm = vm_task.vm
    assert vm is not None and run.policy is not None
    policy = run.policy
    options = resolve_options(policy.options, None)
    disk_tasks = {
        t.disk.device_key: t
        for t in vm_task.children.filter(kind=TaskKind.DISK).select_related("disk")
        if t.disk is not None
    }
    parent = parent_point(policy.repository, engine, vm)
    since = {d.device_key: d.change_token for d in parent.disks if d.change_token} if parent else {}
    snapshot_task = _phase(run, vm_task, Phase.SNAPSHOT, 100)
    # The policy's transport order, less what this proxy does not advertise (none listed: all).
    offers = vm_task.proxy.transports if vm_task.proxy else []
    transports = [t for t in options["transport_order"] if not offers or t in offers]
    with (
        transport_preference(transports),
        connector.backup_snapshot(
            vm.connection,
            vm,
            quiesce=options["consistency"] == "application",
            record=_recorder(run, vm),
            since=since,
        ) as snapshot,
    ):
        _end(snapshot_task, message=snapshot.consistency_note)
        if snapshot.consistency != "application":
            log(
                run,
                f"{vm.name}: crash-consistent: {snapshot.consistency_note}",
                level=LogLevel.WARNING,
                task=vm_task,
            )
        if snapshot.transport_note:
            log(run, f"{vm.name}: transport {snapshot.transport_note}", task=vm_task)
        for warning in snapshot.warnings:
            log(run, warning, level=LogLevel.WARNING, task=vm_task)
        inputs = _inputs(snapshot, vm, parent, run, vm_task)
        for item in inputs:
            task = disk_tasks[item.device_key]
            task.state, task.started_at = TaskState.RUNNING, timezone.now()
            task.message = item.full_read_reason or CHANGED_ONLY_NOTE
            task.save(update_fields=["state", "started_at", "message"])
        try:
            started = time.monotonic()
            manifest = write_restore_point(
                engine,
                vm_key=vm_key_for(vm),
                vm_name=vm.name,
                disks=inputs,
                parent=parent,
                vm_config=snapshot.vm_config,
                consistency=snapshot.consistency,
                progress=_Reporter(run, disk_tasks),
                should_cancel=lambda: cancelled(run),
            )
        finally:
            for item in inputs:
                item.source.close()
        commit_task = _phase(run, vm_task, Phase.COMMIT, 101)
        with transaction.atomic():
            point = record_manifest(policy.repository, manifest, run=run, vm=vm)
        snapshot.keep_tracking()
        for record in manifest.disks:
            task = disk_tasks[record.device_key]
            task.state, task.finished_at = TaskState.SUCCEEDED, timezone.now()
            task.bytes_done = task.bytes_total = record.read_bytes
            task.save(update_fields=["state", "finished_at", "bytes_done", "bytes_total"])
        _end(
            commit_task,
            message=f"Restore point {manifest.id} in {time.monotonic() - started:.1f} s",
        )
        cleanup_task = _phase(run, vm_task, Phase.CLEANUP, 102)
    _end(cleanup_task, message="Snapshot and exports removed.")
    return point
