"""Finding what crashed proxies left behind: runs that will never finish, and hypervisor
artifacts (snapshots, checkpoints, exports) that their cleanup never removed."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from inventory.adapters import get_connector
from inventory.models import Connection, heartbeat_cutoff
from jobs.choices import LogLevel, RunResult, RunState, TaskKind, TaskState
from jobs.models import JobRun, RunTask, SnapshotArtifact
from jobs.runstate import finish, log

logger = logging.getLogger(__name__)
ACTIVE = [
    RunState.STARTING,
    RunState.WORKING,
    RunState.WAITING_REPOSITORY,
    RunState.POST_PROCESSING,
]


def fail_lost_runs() -> int:
    """Fail the work of proxies that stopped sending heartbeats; returns runs affected."""
    from jobs.engine import complete_if_done

    cutoff = heartbeat_cutoff()
    dead = Q(proxy__last_heartbeat__lt=cutoff) | Q(proxy__last_heartbeat__isnull=True)
    lost_tasks = RunTask.objects.filter(
        dead,
        kind=TaskKind.VM,
        state__in=[TaskState.PENDING, TaskState.RUNNING],
        proxy__isnull=False,
        run__state__in=ACTIVE,
    ).select_related("proxy", "vm")
    runs = set()
    for task in lost_tasks:
        with transaction.atomic():
            assert task.proxy is not None
            reason = f"Proxy {task.proxy.name} stopped responding (last heartbeat {_when(task)})."
            task.state, task.message, task.finished_at = TaskState.FAILED, reason, timezone.now()
            task.save(update_fields=["state", "message", "finished_at"])
            task.children.filter(state__in=[TaskState.PENDING, TaskState.RUNNING]).update(
                state=TaskState.FAILED
            )
            log(task.run, f"{task.name}: {reason}", level=LogLevel.ERROR, task=task)
        runs.add(task.run_id)
    # A run whose dispatching proxy died before handing its VMs out.
    stuck = JobRun.objects.filter(dead, state=RunState.STARTING, proxy__isnull=False)
    for run in stuck.select_related("proxy"):
        with transaction.atomic():
            assert run.proxy is not None
            finish(run, RunResult.FAILED, f"Proxy {run.proxy.name} stopped responding.")
        runs.add(run.pk)
    for run_pk in runs:
        complete_if_done(run_pk)
    return len(runs)


def _when(task: RunTask) -> str:
    beat = task.proxy.last_heartbeat if task.proxy else None
    return f"{beat:%Y-%m-%d %H:%M:%S} UTC" if beat else "never"


def sweep(*, min_age: timedelta = timedelta(minutes=2)) -> int:
    """Remove artifacts whose run has ended (or that belong to no run) and are not fresh, then
    hunt the product's vSphere snapshots that no artifact accounts for."""
    leftovers = SnapshotArtifact.objects.filter(
        removed_at__isnull=True, created_at__lt=timezone.now() - min_age
    ).filter(Q(run__isnull=True) | Q(run__state=RunState.FINISHED))
    removed = 0
    for artifact in leftovers.select_related("connection", "run"):
        connector = get_connector(artifact.connection.kind)
        if connector is None:
            continue
        try:
            connector.remove_artifact(artifact.connection, artifact.kind, artifact.data)
        except Exception as exc:  # keep it listed; the next sweep tries again
            artifact.note = f"sweeper could not remove it: {exc}"
            artifact.save(update_fields=["note"])
            logger.warning("sweeper: %s: %s", artifact, exc)
            continue
        run = artifact.run
        artifact.removed_at = timezone.now()
        artifact.note = f"removed by the sweeper: run #{run.pk if run else '-'} left it behind"
        artifact.save(update_fields=["removed_at", "note"])
        if run is not None:
            log(
                run,
                f"Sweeper removed a leftover {artifact.kind}: {artifact.data}",
                level=LogLevel.WARNING,
            )
        removed += 1
    return removed + hunt_snapshots(min_age=min_age)


def hunt_snapshots(*, min_age: timedelta) -> int:
    """The snapshot hunter (inventory.vmware.hunter) on every vSphere connection: snapshots with
    the product's name prefix that no running backup owns are removed (after detaching any disk
    still hot-added to a proxy), and VMs needing consolidation are consolidated."""
    from inventory.services import VSPHERE_KINDS
    from inventory.vmware.hunter import hunt_connection

    removed = 0
    for connection in Connection.objects.filter(kind__in=VSPHERE_KINDS):
        mine = SnapshotArtifact.objects.filter(
            connection=connection, kind="snapshot", removed_at__isnull=True
        )
        in_use = {a.data.get("name", "") for a in mine.exclude(run__state=RunState.FINISHED)}
        try:
            result = hunt_connection(connection, in_use=in_use, older_than=min_age)
        except Exception as exc:  # an unreachable vCenter must not stop the other sweeps
            logger.warning("snapshot hunter: %s: %s", connection, exc)
            continue
        for found in result.removed:
            vm_name, _, name = found.partition(": ")
            for artifact in mine.filter(data__name=name).select_related("run"):
                artifact.removed_at = timezone.now()
                artifact.note = "removed by the snapshot hunter"
                artifact.save(update_fields=["removed_at", "note"])
                if artifact.run is not None:
                    log(
                        artifact.run,
                        f"Snapshot hunter removed the leftover snapshot {name} of {vm_name}",
                        level=LogLevel.WARNING,
                    )
            logger.warning("snapshot hunter: %s: removed %s", connection, found)
        for problem in result.failed:
            logger.warning("snapshot hunter: %s: %s", connection, problem)
        if result.consolidation:
            logger.warning(
                "snapshot hunter: %s: VMs needing consolidation: %s",
                connection,
                ", ".join(result.consolidation),
            )
        removed += len(result.removed)
    return removed
