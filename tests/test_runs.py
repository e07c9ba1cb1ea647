"""Runs: start, engine transitions and task tree, cancel, scheduling."""

from datetime import timedelta

import pytest
from django.utils import timezone

from jobs import engine, services
from jobs.choices import RunResult, RunState, TaskState, Trigger
from jobs.models import JobRun, Schedule
from jobs.tasks import dispatch_schedules
from tests.factories import PolicyFactory, VirtualDiskFactory, VirtualMachineFactory

pytestmark = pytest.mark.django_db


def _policy(**kwargs):
    policy = PolicyFactory(**kwargs)
    services.refresh_members(policy)
    return policy


def test_run_without_matching_vms_finishes_with_a_warning(admin_user):
    run = services.start_run(_policy(), trigger=Trigger.MANUAL, acting_user=admin_user)
    engine.execute_run(run.pk)
    run.refresh_from_db()
    assert (run.state, run.result) == (RunState.FINISHED, RunResult.WARNING)
    assert "No virtual machine matched" in run.reason
    assert run.started_at and run.finished_at


def test_vm_on_a_hypervisor_without_connector_fails_with_the_reason(admin_user):
    vm = VirtualMachineFactory(name="web-1", connection__kind="hyperv")
    VirtualDiskFactory(vm=vm, device_key="vda")
    VirtualDiskFactory(vm=vm, device_key="sdb", mode="rdm_physical")
    policy = _policy()
    policy.vms.set([vm])
    run = services.start_run(policy, trigger=Trigger.MANUAL, acting_user=admin_user)
    engine.execute_run(run.pk)
    run.refresh_from_db()
    assert (run.state, run.result) == (RunState.FINISHED, RunResult.FAILED)
    vm_task = run.tasks.get(kind="vm")
    assert vm_task.state == TaskState.FAILED
    assert "No connector for Microsoft Hyper-V" in vm_task.message
    disks = {t.name: t for t in vm_task.children.all()}
    assert disks["sdb"].state == TaskState.SKIPPED and "RDM" in disks["sdb"].message
    assert disks["vda"].state == TaskState.CANCELLED
    assert run.logs.filter(level=40, message__contains="web-1").exists()


def test_run_fails_when_the_requester_lost_the_right_to_run_it(make_user):
    from backupconsole.models import RoleAssignment
    from backupconsole.permissions import forget_cached_assignments

    operator = make_user("olga", "operator")
    run = services.start_run(_policy(), trigger=Trigger.MANUAL, acting_user=operator)
    RoleAssignment.objects.filter(user=operator).delete()
    forget_cached_assignments(operator)
    engine.execute_run(run.pk)
    run.refresh_from_db()
    assert run.result == RunResult.FAILED and "may no longer run" in run.reason


def test_cancel_of_a_queued_run_ends_it_at_once(admin_user):
    run = services.start_run(_policy(), trigger=Trigger.MANUAL, acting_user=admin_user)
    services.cancel_run(run, acting_user=admin_user)
    run.refresh_from_db()
    assert (run.state, run.result) == (RunState.FINISHED, RunResult.CANCELLED)
    engine.execute_run(run.pk)  # a late delivery of the task does nothing
    run.refresh_from_db()
    assert run.result == RunResult.CANCELLED and run.started_at is None


def test_cancel_of_a_finished_run_is_refused(admin_user, api):
    run = services.start_run(_policy(), trigger=Trigger.MANUAL, acting_user=admin_user)
    engine.execute_run(run.pk)
    response = api.post(f"/api/jobs/runs/{run.pk}/cancel/")
    assert response.status_code == 400
    assert "already finished" in response.data["non_field_errors"][0]


def test_run_api_lists_tasks_and_logs_filtered_by_run(admin_user, api):
    vm = VirtualMachineFactory(connection__kind="hyperv")
    policy = _policy()
    policy.vms.set([vm])
    run = services.start_run(policy, trigger=Trigger.MANUAL, acting_user=admin_user)
    engine.execute_run(run.pk)
    other = services.start_run(_policy(), trigger=Trigger.MANUAL, acting_user=admin_user)
    engine.execute_run(other.pk)
    tasks = api.get(f"/api/jobs/tasks/?run={run.pk}").data["results"]
    assert [t["name"] for t in tasks] == [vm.name]
    logs = api.get(f"/api/jobs/logs/?run={run.pk}&min_level=40").data["results"]
    assert len(logs) == 1 and vm.name in logs[0]["message"]
    failed = api.get("/api/jobs/runs/?result=failed").data["results"]
    assert [r["id"] for r in failed] == [run.pk]


def test_scoped_user_sees_only_runs_of_their_policy(admin_user, api_as):
    mine, theirs = _policy(name="mine"), _policy(name="theirs")
    run_mine = services.start_run(mine, trigger=Trigger.MANUAL, acting_user=admin_user)
    services.start_run(theirs, trigger=Trigger.MANUAL, acting_user=admin_user)
    client = api_as(
        "owner", "viewer", object_types=["jobs.jobrun"], constraints={"policy__name": "mine"}
    )
    assert [r["id"] for r in client.get("/api/jobs/runs/").data["results"]] == [run_mine.pk]


def test_due_schedules_start_runs_once(admin_user):
    policy = _policy()
    Schedule.objects.create(
        policy=policy,
        cron="*/5 * * * *",
        timezone="Europe/Berlin",
        last_fired_at=timezone.now() - timedelta(minutes=6),
    )
    Schedule.objects.create(
        policy=_policy(), cron="0 0 1 1 *", timezone="UTC", last_fired_at=timezone.now()
    )
    assert dispatch_schedules() == 1
    run = JobRun.objects.get()
    assert run.policy == policy and run.trigger == Trigger.SCHEDULE
    assert dispatch_schedules() == 0  # not due again until the next firing


def test_disabled_policy_is_not_scheduled(admin_user):
    policy = _policy(enabled=False)
    Schedule.objects.create(
        policy=policy,
        cron="* * * * *",
        timezone="UTC",
        last_fired_at=timezone.now() - timedelta(hours=1),
    )
    assert dispatch_schedules() == 0
    assert not JobRun.objects.exists()


def test_back_up_one_vm_now_through_the_api(api):
    lonely = VirtualMachineFactory(name="lonely", connection__kind="hyperv")
    response = api.post(f"/api/inventory/vms/{lonely.pk}/backup/", {}, format="json")
    assert response.status_code == 400 and "not protected" in response.data["policy"][0]
    policy = _policy()
    web, db = VirtualMachineFactory(name="web"), VirtualMachineFactory(name="db")
    for vm in (web, db, lonely):
        vm.connection.kind = "hyperv"
        vm.connection.save()
    policy.vms.set([web, db])
    services.refresh_members(policy)
    response = api.post(f"/api/inventory/vms/{web.pk}/backup/", {}, format="json")
    assert response.status_code == 202 and response.data["trigger"] == "api"
    engine.execute_run(response.data["id"])
    run = JobRun.objects.get(pk=response.data["id"])
    assert list(run.tasks.filter(kind="vm").values_list("name", flat=True)) == ["web"]
