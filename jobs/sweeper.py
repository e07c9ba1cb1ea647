"""Finding what crashed proxies left behind: runs that will never finish, and hypervisor
artifacts (snapshots, checkpoints, exports) that their cleanup never removed."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from inventory.adapters import get_connector
from inventory.models import heartbeat_cutoff
from jobs.choices import LogLevel, RunResult, RunState, TaskState
from jobs.models import JobRun, SnapshotArtifact
from jobs.runstate import finish, log

logger = logging.getLogger(__name__)
ACTIVE = [RunState.STARTING, RunState.WORKING, RunState.POST_PROCESSING]


def fail_lost_runs() -> int:
    cutoff = heartbeat_cutoff()
    lost = JobRun.objects.filter(state__in=ACTIVE, proxy__isnull=False).filter(
        Q(proxy__last_heartbeat__lt=cutoff) | Q(proxy__last_heartbeat__isnull=True)
    )
    count = 0
    for run in lost.select_related("proxy"):
        with transaction.atomic():
            run = JobRun.objects.select_for_update().get(pk=run.pk)
            if run.state not in ACTIVE:
                continue
            assert run.proxy is not None
            beat = run.proxy.last_heartbeat
            when = f"{beat:%Y-%m-%d %H:%M:%S} UTC" if beat else "never"
            run.tasks.filter(state__in=[TaskState.PENDING, TaskState.RUNNING]).update(
                state=TaskState.FAILED
            )
            finish(
                run,
                RunResult.FAILED,
                f"Proxy {run.proxy.name} stopped responding (last heartbeat {when}); "
                "its snapshots are removed by the sweeper.",
            )
            count += 1
    return count


def sweep(*, min_age: timedelta = timedelta(minutes=2)) -> int:
    """Remove artifacts whose run has ended (or that belong to no run) and are not fresh."""
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
    return removed
