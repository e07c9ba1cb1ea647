from __future__ import annotations

from celery import shared_task
from django.db import transaction
from django.utils import timezone

from inventory.models import Proxy
from jobs import engine
from jobs.choices import RunKind, Trigger
from jobs.models import JobRun, Schedule
from jobs.schedules import next_fire


@shared_task(bind=True)
def execute_run(self, run_pk: int) -> None:  # type: ignore[no-untyped-def]
    queue = (self.request.delivery_info or {}).get("routing_key")
    proxy = Proxy.objects.filter(queue=queue).first() if queue else None
    kind = JobRun.objects.values_list("kind", flat=True).get(pk=run_pk)
    if kind == RunKind.BACKUP:
        engine.execute_run(run_pk, proxy=proxy)
    elif kind == RunKind.RESTORE:
        from jobs.restore import execute_restore

        execute_restore(run_pk, proxy=proxy)
    else:
        from storage import maintenance

        maintenance.execute_run(run_pk, proxy=proxy)


@shared_task(bind=True)
def back_up_vm_task(self, run_pk: int, task_pk: int) -> None:  # type: ignore[no-untyped-def]
    queue = (self.request.delivery_info or {}).get("routing_key")
    proxy = Proxy.objects.filter(queue=queue).first() if queue else None
    engine.run_vm_task(run_pk, task_pk, proxy=proxy)


@shared_task
def dispatch_schedules() -> int:
    """Start the runs whose schedules came due; run every SCHEDULE_TICK_SECONDS by beat."""
    from backupconsole.errors import ActionRefused
    from jobs.services import start_run

    now = timezone.now()
    fired = 0
    due = Schedule.objects.filter(enabled=True, policy__enabled=True).select_related("policy")
    for schedule in due:
        last = schedule.last_fired_at or now
        if next_fire(schedule.cron, schedule.timezone, last) > now:
            continue
        with transaction.atomic():
            Schedule.objects.filter(pk=schedule.pk).update(last_fired_at=now)
            try:
                start_run(schedule.policy, trigger=Trigger.SCHEDULE, acting_user=None)
                fired += 1
            except ActionRefused:
                # Still running from the previous firing: this firing is skipped, as in
                # every backup product; the run log of the active run shows it continues.
                pass
    return fired


@shared_task
def reap_lost_runs() -> int:
    """Fail runs whose proxy stopped sending heartbeats (a worker killed mid-run)."""
    from jobs.sweeper import fail_lost_runs

    return fail_lost_runs()


@shared_task
def sweep_artifacts() -> int:
    """Remove hypervisor artifacts (snapshots, checkpoints, exports) left by ended runs."""
    from jobs.sweeper import sweep

    return sweep()
