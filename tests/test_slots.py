"""Slots: a VM waits, visibly, while its repository already has the most writers allowed."""

import threading
import time

import pytest
from django.db import connections

from jobs import engine, services
from jobs.choices import RunResult, RunState, TaskState, Trigger
from jobs.models import JobRun, RunTask
from tests.factories import PolicyFactory, VirtualMachineFactory

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_vm_waits_for_the_repository_then_runs(admin_user, settings):
    settings.REPOSITORY_MAX_WRITERS = 1
    busy_policy = PolicyFactory()
    busy_run = services.start_run(busy_policy, trigger=Trigger.MANUAL, acting_user=admin_user)
    writer = RunTask.objects.create(run=busy_run, kind="vm", name="big-db", state="running")

    policy = PolicyFactory(repository=busy_policy.repository)
    vm = VirtualMachineFactory(name="web-1", connection__kind="hyperv")
    policy.vms.set([vm])
    run = services.start_run(policy, trigger=Trigger.MANUAL, acting_user=admin_user)

    def in_thread() -> None:
        try:
            engine.execute_run(run.pk)
        finally:
            connections.close_all()

    thread = threading.Thread(target=in_thread)
    thread.start()
    deadline = time.monotonic() + 20
    while JobRun.objects.get(pk=run.pk).state != RunState.WAITING_REPOSITORY:
        assert time.monotonic() < deadline, "the run never showed that it waits"
        time.sleep(0.05)
    task = RunTask.objects.get(run=run, kind="vm")
    assert task.state == TaskState.PENDING and "Waiting for the repository" in task.message
    writer.state = TaskState.SUCCEEDED  # the other backup ends: the slot frees up
    writer.save()
    thread.join(timeout=20)
    assert not thread.is_alive()
    run.refresh_from_db()
    assert run.state == RunState.FINISHED
    # It ran once the slot was free (it then fails: no Hyper-V connector yet).
    assert run.result == RunResult.FAILED and "No connector" in run.reason
    assert run.logs.filter(message__contains="Waiting for the repository").exists()
