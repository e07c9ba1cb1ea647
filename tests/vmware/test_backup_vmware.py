"""End to end on vcsim through the real engine and PostgreSQL, as for KVM: two VMs protected,
full (CBT turned on, allocated areas only), some blocks changed, incremental (only the changed
areas read), every restore point restored and compared; disks vSphere cannot snapshot left out
with the reason; a CBT reset answered by a full read that stores only new chunks."""

from __future__ import annotations

import pytest
from pyVmomi import vim

from inventory.models import VirtualMachine
from inventory.vmware.restore import restore_disk_to_datastore, restore_vm
from inventory.vmware.session import VSphereError
from jobs.choices import RunResult, TaskKind, TaskState
from jobs.models import SnapshotArtifact
from storage.engine.reader import restore_disk_file
from storage.engine.writer import Cancelled
from storage.engine_access import open_repository
from tests.vmware.conftest import MiB, Vcsim, sha256_of_file, wait_task
from tests.vmware.world import (
    BLOCK,
    CHUNK,
    allocated_windows,
    connect,
    disk_keys,
    logs,
    point_of,
    protect,
    restored_sha256,
    run,
    snapshots_of,
)

pytestmark = pytest.mark.django_db(transaction=True)


def _no_snapshots_left(vcsim: Vcsim, *names: str) -> None:
    for name in names:
        assert snapshots_of(vcsim, name) == [], f"{name} kept a snapshot"
    assert not SnapshotArtifact.objects.filter(removed_at__isnull=True).exists()


def test_full_then_incremental_of_two_vms_restores_every_point(vcsim, admin_user, tmp_path):
    connection = connect(vcsim, admin_user)
    policy = protect(connection, vcsim.vms, admin_user, tmp_path)
    disks = {(name, i) for name in vcsim.vms for i in range(len(vcsim.disks(name)))}
    expected = {d: vcsim.sha256_of_disk(*d) for d in disks}
    allocated = {d: allocated_windows(vcsim.disk_path(*d)) for d in disks}

    full = run(policy, admin_user)
    assert full.result == RunResult.SUCCEEDED, (full.reason, logs(full))
    messages = logs(full)
    for name in vcsim.vms:
        assert f"{name}: CBT was off: turned it on" in "\n".join(messages)
        assert any(
            m.startswith(f"{name}: transport nbdssl") and "hotadd: this proxy is not a VM" in m
            for m in messages
        ), messages
        point = point_of(full, name)
        assert point.consistency == "crash"
        for index, key in enumerate(disk_keys(vcsim, name)):
            disk = point.disks.get(device_key=key)
            assert disk.full_read_reason == "First backup of this disk."
            # A full reads the allocated areas only (CBT's "*"), in whole repository chunks.
            assert disk.read_bytes == allocated[(name, index)] < 64 * MiB
            restored = restored_sha256(point, key, tmp_path / f"full-{name}-{key}.raw")
            assert restored == expected[(name, index)], (name, key)
    _no_snapshots_left(vcsim, *vcsim.vms)
    assert VirtualMachine.objects.get(name="src-vm-1").disks.count() == 1

    # Change a few blocks: inside one 64 KiB block, across a block boundary, and far away.
    vcsim.write_disk("src-vm-1", 3 * BLOCK + 100, b"x" * 10)
    vcsim.write_disk("src-vm-1", 20 * BLOCK - 5, b"y" * 10)
    vcsim.write_disk("src-vm-2", 60 * MiB, b"z", disk_index=1)
    expected = {d: vcsim.sha256_of_disk(*d) for d in disks}

    incremental = run(policy, admin_user)
    assert incremental.result == RunResult.SUCCEEDED, (incremental.reason, logs(incremental))
    assert not any("CBT was off" in m for m in logs(incremental))
    read = {}
    for name in vcsim.vms:
        point = point_of(incremental, name)
        for index, key in enumerate(disk_keys(vcsim, name)):
            disk = point.disks.get(device_key=key)
            assert disk.full_read_reason == "", disk.full_read_reason
            read[(name, index)] = disk.read_bytes
            restored = restored_sha256(point, key, tmp_path / f"incr-{name}-{key}.raw")
            assert restored == expected[(name, index)], (name, key)
    # Only the changed areas were read: 64 KiB blocks as QueryChangedDiskAreas reports them.
    assert read == {("src-vm-1", 0): 3 * BLOCK, ("src-vm-2", 0): 0, ("src-vm-2", 1): BLOCK}
    assert point_of(incremental, "src-vm-2").new_unique_bytes <= CHUNK
    _no_snapshots_left(vcsim, *vcsim.vms)


def test_restore_as_a_new_vm_and_single_disks(vcsim, admin_user, tmp_path):
    source = vcsim.create_vm("restore-src", disks=2)
    network = next(n for n in source.runtime.host.network if n.name == "VM Network")
    nic = vim.vm.device.VirtualVmxnet3(
        key=-1,
        backing=vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(
            deviceName="VM Network", network=network
        ),
    )
    add = vim.vm.device.VirtualDeviceSpec(operation="add", device=nic)
    wait_task(vcsim.si, source.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[add])))
    connection = connect(vcsim, admin_user)
    policy = protect(connection, ["restore-src"], admin_user, tmp_path)
    expected = [vcsim.sha256_of_disk("restore-src", i) for i in range(2)]
    keys = disk_keys(vcsim, "restore-src")
    job = run(policy, admin_user)
    assert job.result == RunResult.SUCCEEDED, (job.reason, logs(job))
    point = point_of(job, "restore-src")
    repo = open_repository(point.repository)
    manifest = repo.read_manifest(point.manifest_path)
    vcsim.write_disk("restore-src", 0, b"later" * 100)  # the source moves on; restores must not

    restored = restore_vm(
        connection, repo, manifest, name="restore-copy", datastore=vcsim.datastore, power_on=True
    )
    copy = vcsim.find_vm("restore-copy")
    original = vcsim.find_vm("restore-src")
    assert copy._moId == restored.moref != original._moId
    assert copy.runtime.powerState == "poweredOn"
    assert copy.config.hardware.numCPU == 1 and copy.config.hardware.memoryMB == 256
    assert copy.config.instanceUuid != original.config.instanceUuid
    nics = [
        d for d in copy.config.hardware.device if isinstance(d, vim.vm.device.VirtualEthernetCard)
    ]
    assert [(type(n).__name__, n.backing.deviceName) for n in nics] == [
        ("vim.vm.device.VirtualVmxnet3", "VM Network")
    ]
    assert restored.notes == []
    files = [d.backing.fileName for d in vcsim.disks("restore-copy")]
    assert files == [restored.disk_files[k] for k in keys]
    for index, key in enumerate(keys):
        assert sha256_of_file(vcsim.local_path(restored.disk_files[key])) == expected[index]
    # Nothing is overwritten: the same name again is refused before any upload.
    with pytest.raises(VSphereError, match="exists already"):
        restore_vm(connection, repo, manifest, name="restore-copy", datastore=vcsim.datastore)

    on_datastore = restore_disk_to_datastore(
        connection, repo, manifest, keys[1], datastore=vcsim.datastore, path="restored/d1.vmdk"
    )
    assert on_datastore == f"[{vcsim.datastore}] restored/d1.vmdk"
    assert sha256_of_file(vcsim.local_path(on_datastore)) == expected[1]
    with pytest.raises(VSphereError, match="exists already"):
        restore_disk_to_datastore(
            connection, repo, manifest, keys[1], datastore=vcsim.datastore, path="restored/d1.vmdk"
        )
    local = restore_disk_file(repo, manifest, keys[0], tmp_path / "d0.raw")
    assert sha256_of_file(local) == expected[0]


def test_a_cancelled_restore_leaves_nothing_on_the_datastore(vcsim, admin_user, tmp_path):
    vcsim.create_vm("cancel-src", disks=2)
    connection = connect(vcsim, admin_user)
    job = run(protect(connection, ["cancel-src"], admin_user, tmp_path), admin_user)
    assert job.result == RunResult.SUCCEEDED, (job.reason, logs(job))
    point = point_of(job, "cancel-src")
    repo = open_repository(point.repository)
    manifest = repo.read_manifest(point.manifest_path)
    key = disk_keys(vcsim, "cancel-src")[1]

    def cancel_half_way(done: int, total: int) -> None:
        if done > total // 2:  # the first disk is uploaded, the second is on its way
            raise Cancelled("cancelled while restoring")

    with pytest.raises(Cancelled):
        restore_vm(
            connection,
            repo,
            manifest,
            name="cancelled-copy",
            datastore=vcsim.datastore,
            progress=cancel_half_way,
        )
    with pytest.raises(LookupError):
        vcsim.find_vm("cancelled-copy")
    assert not (vcsim.datastore_dir / "cancelled-copy").exists()

    with pytest.raises(Cancelled):
        restore_disk_to_datastore(
            connection,
            repo,
            manifest,
            key,
            datastore=vcsim.datastore,
            path="cancelled/d1.vmdk",
            progress=cancel_half_way,
        )
    assert list((vcsim.datastore_dir / "cancelled").glob("d1*")) == []
    # Nothing in the way of the same restores, uncancelled.
    done = restore_disk_to_datastore(
        connection, repo, manifest, key, datastore=vcsim.datastore, path="cancelled/d1.vmdk"
    )
    assert sha256_of_file(vcsim.local_path(done)) == vcsim.sha256_of_disk("cancel-src", 1)


def test_rdm_and_independent_disks_are_left_out_with_the_reason(vcsim, admin_user, tmp_path):
    connection = connect(vcsim, admin_user)
    vm = VirtualMachine.objects.get(name=vcsim.rdm_vm)
    keys = disk_keys(vcsim, vcsim.rdm_vm)
    modes = dict(vm.disks.values_list("device_key", "mode"))
    assert [modes[k] for k in keys] == ["persistent", "rdm_physical", "independent_persistent"]
    policy = protect(connection, [vcsim.rdm_vm], admin_user, tmp_path)
    expected = vcsim.sha256_of_disk(vcsim.rdm_vm, 0)

    job = run(policy, admin_user)
    # A warning, not a failure: the rest of the VM is backed up.
    assert job.result == RunResult.WARNING, (job.reason, logs(job))
    assert "1 with disks left out" in job.reason
    vm_task = job.tasks.get(kind=TaskKind.VM)
    assert vm_task.state == TaskState.WARNING
    skipped = {
        t.disk.device_key: t for t in job.tasks.filter(kind=TaskKind.DISK, disk__isnull=False)
    }
    assert skipped[keys[1]].state == TaskState.SKIPPED
    assert "Physical-mode RDM" in skipped[keys[1]].message
    assert skipped[keys[2]].state == TaskState.SKIPPED
    assert "Independent disks" in skipped[keys[2]].message
    warnings = [m for m in logs(job) if "not backed up" in m]
    assert len(warnings) == 2 and any("Physical-mode RDM" in m for m in warnings)
    point = point_of(job, vcsim.rdm_vm)
    assert list(point.disks.values_list("device_key", flat=True)) == [keys[0]]
    assert restored_sha256(point, keys[0], tmp_path / "rdm-vm-0.raw") == expected
    _no_snapshots_left(vcsim, vcsim.rdm_vm)


def test_asking_for_quiescing_without_vmware_tools_gives_crash_consistency(
    vcsim, admin_user, tmp_path
):
    vcsim.create_vm("no-tools", fill=False, size=MiB)
    connection = connect(vcsim, admin_user)
    policy = protect(connection, ["no-tools"], admin_user, tmp_path, consistency="application")
    job = run(policy, admin_user)
    assert job.result == RunResult.SUCCEEDED, (job.reason, logs(job))
    assert point_of(job, "no-tools").consistency == "crash"
    assert any("VMware Tools are not running" in m for m in logs(job))


def test_cbt_reset_means_a_full_read_that_stores_only_new_chunks(vcsim, admin_user, api, tmp_path):
    vcsim.create_vm("cbt-vm")
    connection = connect(vcsim, admin_user)
    vm = VirtualMachine.objects.get(name="cbt-vm")
    policy = protect(connection, ["cbt-vm"], admin_user, tmp_path)
    assert run(policy, admin_user).result == RunResult.SUCCEEDED

    vcsim.write_disk("cbt-vm", 5 * MiB, b"n" * 1000)  # in a window that was empty
    response = api.post("/api/inventory/vms/reset-cbt/", {"vms": [vm.pk]}, format="json")
    assert response.status_code == 200, response.data
    assert response.data == [
        {
            "vm": vm.pk,
            "ok": True,
            "message": "CBT reset on cbt-vm: the next backup reads it in full.",
        }
    ]
    assert vcsim.find_vm("cbt-vm").config.changeTrackingEnabled is True
    assert snapshots_of(vcsim, "cbt-vm") == []  # the reset's snapshot cycle left nothing

    job = run(policy, admin_user)
    assert job.result == RunResult.SUCCEEDED, (job.reason, logs(job))
    point = point_of(job, "cbt-vm")
    disk = point.disks.get()
    assert "The host rejected change ID" in disk.full_read_reason
    assert "earlier CBT period" in disk.full_read_reason
    assert any("read in full: The host rejected change ID" in m for m in logs(job))
    assert disk.read_bytes == allocated_windows(vcsim.disk_path("cbt-vm"))
    # The same chain: of all it read, only the window holding the new write was new.
    assert point.new_unique_bytes <= CHUNK
    expected = vcsim.sha256_of_disk("cbt-vm")
    assert restored_sha256(point, disk.device_key, tmp_path / "after-reset.raw") == expected

    vcsim.write_disk("cbt-vm", 7 * MiB, b"h")
    healed = run(policy, admin_user)
    disk = point_of(healed, "cbt-vm").disks.get()
    assert disk.full_read_reason == "" and disk.read_bytes == BLOCK


def test_cbt_reset_refuses_other_hypervisors_and_unknown_vms(api, admin_user):
    from tests.factories import VirtualMachineFactory

    kvm_vm = VirtualMachineFactory(name="kvm-guest")
    response = api.post("/api/inventory/vms/reset-cbt/", {"vms": [kvm_vm.pk]}, format="json")
    assert response.status_code == 400 and "vSphere VMs only" in str(response.data["vms"])
    response = api.post("/api/inventory/vms/reset-cbt/", {"vms": [kvm_vm.pk + 99]}, format="json")
    assert response.status_code == 400 and "Unknown" in str(response.data["vms"])
    response = api.post("/api/inventory/vms/reset-cbt/", {"vms": []}, format="json")
    assert response.status_code == 400 and "vms" in response.data
