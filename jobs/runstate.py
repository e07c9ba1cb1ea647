"""Run state changes shared by every kind of run: write first, publish after commit."""

from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone

from inventory.models import Proxy
from jobs.choices import LogLevel, RunResult, RunState
from jobs.models import JobRun, RunLog, RunTask
from jobs.progress import publish_run

logger = logging.getLogger("jobs.run")


def log(
    run: JobRun, message: str, *, level: int = LogLevel.INFO, task: RunTask | None = None
) -> None:
    RunLog.objects.create(run=run, task=task, level=level, message=message)
    logger.log(level, "run %s: %s", run.pk, message)


def set_state(run: JobRun, state: str, **fields: object) -> None:
    run.state = state
    for name, value in fields.items():
        setattr(run, name, value)
    run.save()
    transaction.on_commit(lambda: publish_run(run.pk))


def finish(run: JobRun, result: str, reason: str) -> None:
    log(run, reason, level=LogLevel.INFO if result == RunResult.SUCCEEDED else LogLevel.WARNING)
    set_state(run, RunState.FINISHED, result=result, reason=reason, finished_at=timezone.now())


def begin(run_pk: int, proxy: Proxy | None) -> JobRun | None:
    """Move a queued run to starting; None if it is not queued (cancelled, or delivered twice)."""
    with transaction.atomic():
        run = JobRun.objects.select_for_update().get(pk=run_pk)
        if run.state != RunState.QUEUED:
            return None
        set_state(run, RunState.STARTING, started_at=timezone.now(), proxy=proxy)
        log(run, f"Started on proxy {proxy.name}." if proxy else "Started.")
    return run


def cancelled(run: JobRun) -> bool:
    run.refresh_from_db(fields=["cancel_requested"])
    return run.cancel_requested
