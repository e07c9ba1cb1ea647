import pytest

from backupconsole.permissions import may
from inventory.models import VirtualDisk, VirtualMachine
from jobs.models import JobRun, RunTask
from storage.models import RestorePoint, RestorePointDisk
from tests.factories import (
    PolicyFactory,
    RepositoryFactory,
    RestorePointFactory,
    VirtualDiskFactory,
    VirtualMachineFactory,
)

pytestmark = pytest.mark.django_db


def test_roles_grant_their_actions(make_user):
    viewer = make_user("v", "viewer")
    operator = make_user("o", "operator")
    admin = make_user("a", "administrator")
    nobody = make_user("n")
    assert may(viewer, "view", VirtualMachine) and not may(viewer, "run", JobRun)
    assert may(operator, "run", JobRun) and may(operator, "restore", VirtualMachine)
    assert not may(operator, "add", VirtualMachine)
    assert all(may(admin, a, VirtualMachine) for a in ("view", "add", "delete", "manage"))
    assert not may(nobody, "view", VirtualMachine)


def test_restrict_returns_all_rows_for_a_global_role_and_none_without_one(make_user):
    VirtualMachineFactory.create_batch(3)
    assert VirtualMachine.objects.restrict(make_user("v", "viewer")).count() == 3
    assert VirtualMachine.objects.restrict(make_user("n")).count() == 0


def test_constrained_role_sees_only_matching_rows(make_user):
    VirtualMachineFactory(name="web-1", tags=["web"])
    VirtualMachineFactory(name="db-1", tags=["db"])
    owner = make_user(
        "owner",
        "operator",
        object_types=["inventory.virtualmachine"],
        constraints={"tags__name": "web"},
    )
    assert list(
        VirtualMachine.objects.restrict(owner, "restore").values_list("name", flat=True)
    ) == ["web-1"]
    # The scoped assignment says nothing about policies, so none are visible.
    PolicyFactory()
    assert not may(owner, "view", PolicyFactory._meta.model)


def test_child_rows_follow_their_parent(make_user):
    web = VirtualMachineFactory(name="web-1", tags=["web"])
    VirtualDiskFactory(vm=web)
    VirtualDiskFactory()  # a disk of some other VM
    owner = make_user(
        "owner",
        "viewer",
        object_types=["inventory.virtualmachine"],
        constraints={"tags__name": "web"},
    )
    assert list(VirtualDisk.objects.restrict(owner)) == list(web.disks.all())
    assert may(owner, "view", VirtualDisk)
    assert not may(owner, "view", RunTask)


def test_inactive_and_anonymous_users_get_nothing(make_user):
    from django.contrib.auth.models import AnonymousUser

    VirtualMachineFactory()
    user = make_user("gone", "administrator")
    user.is_active = False
    assert VirtualMachine.objects.restrict(user).count() == 0
    assert VirtualMachine.objects.restrict(AnonymousUser()).count() == 0


def test_unknown_action_is_a_programming_error(make_user):
    with pytest.raises(ValueError):
        VirtualMachine.objects.restrict(make_user("v", "viewer"), "fly")


def test_vm_owners_act_on_their_vms_restore_points(make_user):
    web = VirtualMachineFactory(name="web-1", tags=["web"])
    db = VirtualMachineFactory(name="db-1", tags=["db"])
    mine, theirs = RestorePointFactory(vm=web), RestorePointFactory(vm=db)
    orphan = RestorePointFactory(vm=None, vm_key="gone", vm_name="gone")  # its VM left
    disk = RestorePointDisk.objects.create(restore_point=mine, device_key="vda", capacity_bytes=1)
    RestorePointDisk.objects.create(restore_point=theirs, device_key="vda", capacity_bytes=1)
    owner = make_user(
        "owner",
        "operator",
        object_types=["inventory.virtualmachine"],
        constraints={"tags__name": "web"},
    )

    assert list(RestorePoint.objects.restrict(owner, "restore")) == [mine]
    assert list(RestorePoint.objects.restrict(owner, "view")) == [mine]
    assert list(RestorePointDisk.objects.restrict(owner, "view")) == [disk]
    assert may(owner, "restore", RestorePoint)
    admin = make_user("admin", "administrator")
    assert set(RestorePoint.objects.restrict(admin, "restore")) == {mine, theirs, orphan}


def test_grants_on_restore_points_need_no_grant_on_the_vm(make_user):
    kept = RestorePointFactory(repository=RepositoryFactory(name="offsite"))
    RestorePointFactory(vm=kept.vm)  # the same VM, another repository
    auditor = make_user(
        "auditor",
        "operator",
        object_types=["storage.restorepoint"],
        constraints={"repository__name": "offsite"},
    )

    assert list(RestorePoint.objects.restrict(auditor, "restore")) == [kept]
    assert not VirtualMachine.objects.restrict(auditor, "restore").exists()
    assert may(auditor, "restore", RestorePoint) and not may(auditor, "restore", VirtualMachine)


def test_no_role_no_restore_points(make_user):
    RestorePointFactory()
    nobody = make_user("nobody")
    assert not RestorePoint.objects.restrict(nobody, "view").exists()
    assert not may(nobody, "restore", RestorePoint)
