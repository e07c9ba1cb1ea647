"""End to end on a real libvirtd + QEMU: a policy backs a KVM VM up in full, guest writes follow,
the next run is incremental, and every restore point restores to the disk at snapshot time."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from inventory.kvm.connector import KVMError
from inventory.kvm.libvirt_env import disk_aliases, guest_flush, guest_write, guest_write_zero
from inventory.kvm.restore import restore_vm
from inventory.models import VirtualMachine
from jobs import engine, services
from jobs.choices import RunResult, Trigger
from jobs.models import JobRun, SnapshotArtifact
from storage.engine.reader import restore_disk
from storage.engine_access import open_repository
from storage.models import RestorePoint
from tests.kvm.protect import protect
from tests.storage.helpers import sha256

pytestmark = pytest.mark.django_db(transaction=True)
MiB = 1024 * 1024


def _kill_9(dom) -> None:
    """SIGKILL the domain's QEMU, as a host crash would leave it (not libvirt's destroy)."""
    name = dom.name()
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, PermissionError, NotADirectoryError):
            continue
        if (
            cmdline
            and b"qemu-system" in cmdline[0]
            and f"guest={name}".encode() in b",".join(cmdline)
        ):
            os.kill(int(proc.name), signal.SIGKILL)
            break
    else:
        raise AssertionError(f"no QEMU process for {name}")
    for _ in range(100):
        if not dom.isActive():
            return
        time.sleep(0.1)
    raise AssertionError("libvirt did not notice QEMU died")


def _convert(disk: Path, out: Path) -> Path:
    subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", str(disk), str(out)], check=True)
    return out


@pytest.fixture
def world(libvirt_env, kvm_domain, admin_user, tmp_path):
    policy = protect(str(libvirt_env.socket_path), [kvm_domain.name], admin_user, tmp_path / "repo")
    vm = VirtualMachine.objects.get(name=kvm_domain.name)
    return {"vm": vm, "policy": policy, "repository": policy.repository, "domain": kvm_domain}


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


def test_killed_qemu_means_a_full_read_with_the_reason_then_incremental_again(
    world, admin_user, tmp_path
):
    dom, aliases = world["domain"].domain, world["domain"].aliases
    guest_write(dom, aliases[0], 2 * MiB, MiB, 0x44)
    assert _run(world["policy"], admin_user).result == RunResult.SUCCEEDED
    guest_write(dom, aliases[0], 7 * MiB, 64 * 1024, 0x55)
    guest_flush(dom, aliases[0])
    _kill_9(dom)  # persistent bitmaps stay marked in-use in the qcow2: inconsistent
    dom.create()
    aliases = world["domain"].aliases = disk_aliases(dom)
    after_crash = _run(world["policy"], admin_user)
    assert after_crash.result == RunResult.SUCCEEDED, after_crash.reason
    point = RestorePoint.objects.get(run=after_crash)
    reasons = {d.device_key: d.full_read_reason for d in point.disks.all()}
    assert all("unusable" in r or "no longer exists" in r for r in reasons.values()), reasons
    assert after_crash.logs.filter(message__contains="read in full").exists()
    # Same chain: the full read stored only what was new.
    assert point.new_unique_bytes <= 4 * MiB  # the one 4 MiB window the write touched
    _check_restores(world, point, tmp_path, "after-crash")
    guest_write(dom, aliases[1], MiB, 64 * 1024, 0x66)
    healed = _run(world["policy"], admin_user)
    assert healed.result == RunResult.SUCCEEDED
    disks = {d.device_key: d for d in RestorePoint.objects.get(run=healed).disks.all()}
    assert disks["sdb"].full_read_reason == "" and disks["sdb"].read_bytes == 64 * 1024


def test_restore_a_disk_to_qcow2_and_the_vm_as_a_new_domain(world, admin_user, api, tmp_path):
    from jobs.restore import execute_restore

    dom, aliases = world["domain"].domain, world["domain"].aliases
    guest_write(dom, aliases[1], 3 * MiB, 2 * MiB, 0x77)
    run = _run(world["policy"], admin_user)
    point = RestorePoint.objects.get(run=run)
    url = f"/api/storage/restore-points/{point.pk}/restore/"
    bad = api.post(url, {"what": "vm", "path": str(tmp_path)}, format="json")
    assert bad.status_code == 400 and {"name", "connection"} <= set(bad.data)
    response = api.post(
        url,
        {"what": "disk", "disk": "sdb", "path": str(tmp_path / "sdb.qcow2"), "format": "qcow2"},
        format="json",
    )
    assert response.status_code == 202, response.data
    execute_restore(response.data["id"])
    restored = JobRun.objects.get(pk=response.data["id"])
    assert restored.result == RunResult.SUCCEEDED, restored.reason
    guest_flush(dom, aliases[1])
    expected = _convert(world["domain"].disks[1], tmp_path / "sdb.expected")
    assert sha256(_convert(tmp_path / "sdb.qcow2", tmp_path / "sdb.back")) == sha256(expected)

    connection = world["vm"].connection
    response = api.post(
        url,
        {
            "what": "vm",
            "name": f"{dom.name()}-restored",
            "path": str(tmp_path / "vm"),
            "connection": connection.pk,
            "start": True,
        },
        format="json",
    )
    execute_restore(response.data["id"])
    restored = JobRun.objects.get(pk=response.data["id"])
    assert restored.result == RunResult.SUCCEEDED, restored.reason
    new = dom.connect().lookupByName(f"{dom.name()}-restored")
    try:
        assert new.isActive() and new.UUIDString() != dom.UUIDString()
        copy = _convert(tmp_path / "vm" / f"{dom.name()}-restored-sdb.qcow2", tmp_path / "c.raw")
        assert sha256(copy) == sha256(expected)
        # The same name again fails once the disks are written: they are removed again.
        repo = open_repository(point.repository)
        with pytest.raises(KVMError, match="exists already"):
            restore_vm(
                connection,
                repo,
                repo.read_manifest(point.manifest_path),
                name=f"{dom.name()}-restored",
                directory=tmp_path / "again",
            )
        assert list((tmp_path / "again").iterdir()) == []
    finally:
        new.destroy()
        new.undefine()


def test_cancel_mid_run_stops_within_seconds_and_cleans_up(
    libvirt_conn, libvirt_env, admin_user, tmp_path
):
    import threading

    from django.db import connections

    from inventory.kvm.libvirt_env import define_test_domain, remove_domain

    dom = define_test_domain(
        libvirt_conn,
        f"bc-cancel-{os.getpid()}",
        [tmp_path / "big.qcow2"],
        tmp_path,
        disk_size=768 * MiB,
    )
    try:
        guest_write(dom, disk_aliases(dom)[0], 0, 700 * MiB, 0x5A)
        policy = protect(str(libvirt_env.socket_path), [dom.name()], admin_user, tmp_path / "repo")
        run = services.start_run(policy, trigger=Trigger.MANUAL, acting_user=admin_user)

        def in_thread() -> None:
            try:
                engine.execute_run(run.pk)
            finally:
                connections.close_all()  # this thread's connection

        worker = threading.Thread(target=in_thread)
        worker.start()
        deadline = time.monotonic() + 30
        while not SnapshotArtifact.objects.filter(run=run, kind="backup-job").exists():
            assert time.monotonic() < deadline, "the backup never started"
            time.sleep(0.01)
        services.cancel_run(run, acting_user=admin_user)
        cancelled_at = time.monotonic()
        worker.join(timeout=30)
        assert not worker.is_alive()
        assert time.monotonic() - cancelled_at < 10
        run.refresh_from_db()
        assert run.result == RunResult.CANCELLED
        assert not RestorePoint.objects.filter(run=run).exists()
        assert not SnapshotArtifact.objects.filter(removed_at__isnull=True).exists()
        assert dom.listAllCheckpoints() == [] and dom.jobInfo()[0] == 0
    finally:
        remove_domain(dom)


def test_without_a_guest_agent_the_backup_is_crash_consistent_and_says_why(world, admin_user):
    policy = world["policy"]
    policy.options = {"consistency": "application"}
    policy.save()
    run = _run(policy, admin_user)
    assert run.result == RunResult.SUCCEEDED, run.reason
    point = RestorePoint.objects.get(run=run)
    assert point.consistency == "crash"
    warning = run.logs.get(message__contains="crash-consistent")
    assert "no QEMU guest agent answered" in warning.message
