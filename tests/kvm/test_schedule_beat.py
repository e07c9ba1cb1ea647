"""Scheduling end to end, as in production: `celery beat` with the DatabaseScheduler fires a due
policy schedule, a real worker runs the backup of a KVM VM, and the policy's dynamic rule is
resolved when the run starts, so a VM created later that matches is protected by the next run."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from inventory import services as inventory_services
from inventory.kvm.libvirt_env import define_test_domain, remove_domain
from inventory.tasks import sync_connection
from jobs import services
from jobs.choices import RunResult, RunState, Trigger
from jobs.models import JobRun, Schedule
from storage import services as storage_services
from storage.models import RestorePoint

pytestmark = pytest.mark.django_db(transaction=True)
MiB = 1024 * 1024


def _make_due(policy) -> None:
    """As if the last firing were long ago: the next beat tick fires the schedule."""
    Schedule.objects.filter(policy=policy).update(
        last_fired_at=timezone.now() - timedelta(minutes=5)
    )


def _scheduled_run(policy, after: set[int], timeout: float = 120) -> JobRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = (
            JobRun.objects.filter(policy=policy, trigger=Trigger.SCHEDULE)
            .exclude(pk__in=after)
            .first()
        )
        if run is not None and run.state == RunState.FINISHED:
            return run
        time.sleep(0.5)
    raise AssertionError("no scheduled run finished in time")


def test_beat_fires_the_schedule_and_rules_are_resolved_at_run_time(
    celery_worker_process, celery_beat_process, libvirt_env, libvirt_conn, admin_user, tmp_path
):
    prefix = f"bc-sched-{uuid.uuid4().hex[:6]}"
    first = define_test_domain(
        libvirt_conn, f"{prefix}-a", [tmp_path / "a.qcow2"], tmp_path, disk_size=16 * MiB
    )
    later = None
    try:
        connection = inventory_services.create_connection(
            data={"name": "kvm", "kind": "kvm", "address": str(libvirt_env.socket_path)},
            secret="",
            acting_user=admin_user,
        )
        sync_connection(connection.pk)
        repository = storage_services.create_repository(
            data={"name": "primary", "kind": "filesystem", "location": str(tmp_path / "repo")},
            secret="",
            passphrase="pw",
            acting_user=admin_user,
        )
        policy = services.create_policy(
            data={"name": "every-minute", "repository": repository},
            vms=[],
            excluded_vms=[],
            rules=[{"kind": "name_pattern", "value": f"{prefix}-*"}],
            schedules=[{"cron": "* * * * *", "timezone": "Europe/Berlin", "enabled": True}],
            acting_user=admin_user,
        )
        celery_worker_process("proxy-a", also=("console",))  # beat's tasks go to "console"
        _make_due(policy)
        celery_beat_process()

        run = _scheduled_run(policy, after=set())
        assert run.result == RunResult.SUCCEEDED, run.reason
        assert run.requested_by is None  # nobody pressed a button
        assert set(RestorePoint.objects.filter(run=run).values_list("vm__name", flat=True)) == {
            f"{prefix}-a"
        }

        # A new VM that matches the rule appears on the host; the next firing protects it.
        later = define_test_domain(
            libvirt_conn, f"{prefix}-b", [tmp_path / "b.qcow2"], tmp_path, disk_size=16 * MiB
        )
        sync_connection(connection.pk)
        _make_due(policy)
        second = _scheduled_run(policy, after={run.pk})
        assert second.result == RunResult.SUCCEEDED, second.reason
        assert set(RestorePoint.objects.filter(run=second).values_list("vm__name", flat=True)) == {
            f"{prefix}-a",
            f"{prefix}-b",
        }
    finally:
        for domain in (first, later):
            if domain is not None:
                remove_domain(domain)
