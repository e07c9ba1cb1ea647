"""End to end on a real libvirtd + QEMU: a policy backs a KVM VM up in full, guest writes follow,
the next run is incremental, and every restore point restores to the disk at snapshot time."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from inventory import services as inventory_services
from inventory.kvm.libvirt_env import guest_flush, guest_write, guest_write_zero
from inventory.models import VirtualMachine
from inventory.tasks import sync_connection
from jobs import engine, services
from jobs.choices import RunResult, Trigger
from jobs.models import JobRun, SnapshotArtifact
from storage import services as storage_services
from storage.engine.reader import restore_disk
from storage.engine_access import open_repository
from storage.models import RestorePoint
from tests.storage.helpers import sha256

pytestmark = pytest.mark.django_db(transaction=True)
MiB = 1024 * 1024


def _convert(disk: Path, out: Path) -> Path:
    subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", str(disk), str(out)], check=True)
    return out


@pytest.fixture
def world(libvirt_env, kvm_domain, admin_user, tmp_path):
    connection = inventory_services.create_connection(
        data={"name": "kvm-local", "kind": "kvm", "address": str(libvirt_env.socket_path)},
        secret="",
        acting_user=admin_user,
    )
    sync_connection(connection.pk)
    vm = VirtualMachine.objects.get(name=kvm_domain.name)
    repository = storage_services.create_repository(
        data={"name": "primary", "kind": "filesystem", "location": str(tmp_path / "repo")},
        secret="",
        passphrase="pw",
        acting_user=admin_user,
    )
    policy = services.create_policy(
        data={"name": "nightly", "repository": repository, "options": {"consistency": "crash"}},
        vms=[vm],
        excluded_vms=[],
        rules=[],
        schedules=[],
        acting_user=admin_user,
    )
    return {"vm": vm, "policy": policy, "repository": repository, "domain": kvm_domain}


def _run(policy, user) -> JobRun:
    run = services.start_run(policy, trigger=Trigger.MANUAL, acting_user=user)
    engine.execute_run(run.pk)
    run.refresh_from_db()
    return run


def _check_restores(world, point: RestorePoint, tmp_path: Path, label: str) -> None:
    repo = open_repository(world["repository"])
    manifest = repo.read_manifest(point.manifest_path)
    for index, alias in enumerate(world["domain"].aliases):
        guest_flush(world["domain"].domain, alias)
        target = f"sd{chr(97 + index)}"
        expected = _convert(world["domain"].disks[index], tmp_path / f"{label}-{target}.expected")
        restored = tmp_path / f"{label}-{target}.raw"
        restore_disk(repo, manifest, target, restored)
        assert sha256(restored) == sha256(expected), f"{label} {target}"


def test_full_then_incremental_of_a_running_vm(world, admin_user, tmp_path):
    dom, aliases = world["domain"].domain, world["domain"].aliases
    vm = world["vm"]
    assert sorted(vm.disks.values_list("device_key", flat=True)) == ["sda", "sdb"]
    guest_write(dom, aliases[0], 0, MiB, 0x11)
    guest_write(dom, aliases[1], 8 * MiB, 3 * MiB, 0x22)

    full = _run(world["policy"], admin_user)
    assert full.result == RunResult.SUCCEEDED, (
        full.reason,
        list(full.logs.values_list("message", flat=True)),
    )
    first = RestorePoint.objects.get(run=full)
    assert {d.device_key: d.full_read_reason for d in first.disks.all()} == {
        "sda": "First backup of this disk.",
        "sdb": "First backup of this disk.",
    }
    _check_restores(world, first, tmp_path, "full")

    guest_write(dom, aliases[0], 5 * MiB + 4096, 100, 0x33)  # unaligned: a whole granule
    guest_write_zero(dom, aliases[1], 8 * MiB, 64 * 1024)
    incr = _run(world["policy"], admin_user)
    assert incr.result == RunResult.SUCCEEDED, incr.reason
    second = RestorePoint.objects.get(run=incr)
    disks = {d.device_key: d for d in second.disks.all()}
    assert disks["sda"].full_read_reason == "" and disks["sdb"].full_read_reason == ""
    assert disks["sda"].read_bytes == 64 * 1024  # exactly the dirty granule
    assert disks["sdb"].read_bytes == 64 * 1024
    _check_restores(world, second, tmp_path, "incr")
    # Nothing left on the hypervisor but the one checkpoint the next run builds on.
    assert not SnapshotArtifact.objects.filter(removed_at__isnull=True).exists()
    names = [c.getName() for c in dom.listAllCheckpoints()]
    assert len(names) == 1 and names[0] == disks["sda"].change_token
