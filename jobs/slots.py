"""Limits on concurrent work: VMs per host and writers per repository.

A VM waits for a slot before its snapshot is taken, so a busy host or repository is not
overloaded and no snapshot lives longer than it must. Waiting is visible: the VM's task says
what it waits for, and a run with nothing else running shows "waiting for repository".
"""

from __future__ import annotations

import time

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from jobs.choices import LogLevel, RunState, TaskKind, TaskState
from jobs.models import JobRun, RunTask
from jobs.progress import publish_run
from jobs.runstate import cancelled, log, set_state
from storage.models import Repository


def _busy(task: RunTask, repository_id: int) -> str:
    """Why the task cannot start now, or "" when a slot is free."""
    running = RunTask.objects.filter(kind=TaskKind.VM, state=TaskState.RUNNING).exclude(pk=task.pk)
    writers = running.filter(run__policy__repository_id=repository_id).count()
    if writers >= settings.REPOSITORY_MAX_WRITERS:
        return f"Waiting for the repository ({writers} backups are writing to it)."
    vm = task.vm
    assert vm is not None
    host = running.filter(vm__connection_id=vm.connection_id, vm__host_id=vm.host_id).count()
    if host >= settings.HOST_MAX_VMS:
        return f"Waiting for a slot on the host ({host} of its VMs are being backed up)."
    return ""


def acquire(run: JobRun, task: RunTask, *, poll: float = 1.0) -> bool:
    """Block until the VM may start (it is then RUNNING); False if the run was cancelled."""
    assert run.policy is not None
    repository_id = run.policy.repository_id
    announced = ""
    while True:
        with transaction.atomic():
            # One claim at a time per repository, so two VMs cannot take the last slot.
            Repository.objects.select_for_update().filter(pk=repository_id).first()
            why = _busy(task, repository_id)
            if not why:
                task.state, task.started_at, task.message = TaskState.RUNNING, timezone.now(), ""
                task.save(update_fields=["state", "started_at", "message"])
                JobRun.objects.filter(pk=run.pk, state=RunState.WAITING_REPOSITORY).update(
                    state=RunState.WORKING
                )
                transaction.on_commit(lambda: publish_run(run.pk))
                return True
        if why != announced:
            announced = why
            with transaction.atomic():
                task.message = why
                task.save(update_fields=["message"])
                log(run, f"{task.name}: {why}", level=LogLevel.INFO, task=task)
                idle = not run.tasks.filter(kind=TaskKind.VM, state=TaskState.RUNNING).exists()
                run.refresh_from_db(fields=["state"])
                if idle and run.state == RunState.WORKING:
                    set_state(run, RunState.WAITING_REPOSITORY)
                else:
                    transaction.on_commit(lambda: publish_run(run.pk))
        if cancelled(run):
            return False
        time.sleep(poll)
