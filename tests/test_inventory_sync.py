"""Inventory sync keeps user data across renames and moves; lost runs are failed."""

from datetime import timedelta

import pytest
from django.utils import timezone

from inventory.adapters import DiscoveredDisk, DiscoveredObject, DiscoveredVM, InventorySnapshot
from inventory.models import Proxy, VirtualMachine
from inventory.sync import apply_inventory
from jobs import services
from jobs.choices import RunResult, RunState, Trigger
from jobs.models import JobRun
from jobs.sweeper import fail_lost_runs
from tests.factories import ConnectionFactory, PolicyFactory

pytestmark = pytest.mark.django_db


def _snapshot(name: str, folder: str, *, disks=("vda",)) -> InventorySnapshot:
    return InventorySnapshot(
        objects=[
            DiscoveredObject("host-1", "host", "kvm01"),
            DiscoveredObject("f-web", "folder", "web", parent="host-1"),
            DiscoveredObject("f-old", "folder", "old", parent="host-1"),
        ],
        vms=[
            DiscoveredVM(
                external_id="uuid-1",
                name=name,
                instance_uuid="uuid-1",
                power_state="on",
                host="host-1",
                folder=folder,
                tags=["linux"],
                disks=[DiscoveredDisk(d, 10 * 2**30) for d in disks],
            )
        ],
    )


def test_rename_and_move_keep_tags_and_policy_membership(admin_user):
    connection = ConnectionFactory()
    apply_inventory(connection, _snapshot("web-1", "f-web"), acting_user=admin_user)
    vm = VirtualMachine.objects.get()
    from inventory.models import Tag

    vm.tags.add(Tag.objects.create(name="gold"))  # a tag a user gave it in the console
    explicit = PolicyFactory(name="explicit")
    explicit.vms.set([vm])
    by_folder = services.create_policy(
        data={"name": "by-folder", "repository": explicit.repository},
        vms=[],
        excluded_vms=[],
        rules=[{"kind": "folder", "value": "old"}],
        schedules=[],
        acting_user=admin_user,
    )
    assert not by_folder.members.exists()
    result = apply_inventory(
        connection, _snapshot("web-1-renamed", "f-old", disks=("vda", "vdb")), acting_user=None
    )
    assert (result.vms_added, result.vms_updated) == (0, 1)
    vm.refresh_from_db()
    assert vm.name == "web-1-renamed" and vm.folder.name == "old"
    assert set(vm.tags.values_list("name", flat=True)) == {"gold", "linux"}
    assert set(vm.protecting_policies.values_list("name", flat=True)) == {"explicit", "by-folder"}
    assert set(vm.disks.values_list("device_key", flat=True)) == {"vda", "vdb"}


def test_vanished_vm_is_kept_as_not_present(admin_user):
    connection = ConnectionFactory()
    apply_inventory(connection, _snapshot("web-1", "f-web"), acting_user=None)
    result = apply_inventory(connection, InventorySnapshot(objects=[], vms=[]), acting_user=None)
    assert result.vms_gone == 1
    assert VirtualMachine.objects.get().present is False


def test_work_of_a_silent_proxy_is_failed_with_the_reason(admin_user):
    from jobs.models import RunTask

    silent = Proxy.objects.create(
        name="p1", queue="p1", last_heartbeat=timezone.now() - timedelta(minutes=10)
    )
    fresh = Proxy.objects.create(name="p2", queue="p2", last_heartbeat=timezone.now())
    run = services.start_run(PolicyFactory(), trigger=Trigger.MANUAL, acting_user=admin_user)
    JobRun.objects.filter(pk=run.pk).update(state=RunState.WORKING)
    lost = RunTask.objects.create(run=run, kind="vm", name="web-1", state="running", proxy=silent)
    alive = services.start_run(PolicyFactory(), trigger=Trigger.MANUAL, acting_user=admin_user)
    JobRun.objects.filter(pk=alive.pk).update(state=RunState.WORKING)
    RunTask.objects.create(run=alive, kind="vm", name="db-1", state="running", proxy=fresh)
    assert fail_lost_runs() == 1
    run.refresh_from_db()
    lost.refresh_from_db()
    assert lost.state == "failed" and "p1 stopped responding" in lost.message
    assert run.result == RunResult.FAILED and "p1 stopped responding" in run.reason
    assert JobRun.objects.get(pk=alive.pk).state == RunState.WORKING
