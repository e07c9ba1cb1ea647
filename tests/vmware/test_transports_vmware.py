"""Transport modes on vcsim, chosen in the policy's order with the reasons recorded: HotAdd
through a proxy VM on the VM's host (attached, read, detached), HotAdd impossible from a proxy on
another host (never attempted; NBD instead, and the run says why), SAN through a mount of the
datastore, and an order nothing in which can work (the VM fails with every reason)."""

from __future__ import annotations

import pytest

from jobs.choices import RunResult, TaskKind
from jobs.models import SnapshotArtifact
from tests.vmware.world import connect, disk_keys, logs, point_of, protect, restored_sha256, run

pytestmark = pytest.mark.django_db(transaction=True)


def _transport_note(job, vm_name: str) -> str:
    prefix = f"{vm_name}: transport "
    notes = [m[len(prefix) :] for m in logs(job) if m.startswith(prefix)]
    assert len(notes) == 1, logs(job)
    return notes[0]


def _check_restores(vcsim, job, vm_name: str, tmp_path) -> None:
    point = point_of(job, vm_name)
    for index, key in enumerate(disk_keys(vcsim, vm_name)):
        restored = restored_sha256(point, key, tmp_path / f"{job.pk}-{key}.raw")
        assert restored == vcsim.sha256_of_disk(vm_name, index), key


def test_hotadd_attaches_the_snapshot_disks_to_the_proxy_vm_and_detaches_them(
    vcsim, admin_user, tmp_path, settings
):
    proxy = vcsim.find_vm(vcsim.proxy_vm)
    settings.VMWARE_HOTADD_VM = proxy._moId
    before = [d.backing.fileName for d in vcsim.disks(vcsim.proxy_vm)]
    connection = connect(vcsim, admin_user)
    policy = protect(connection, ["src-vm-2"], admin_user, tmp_path)

    job = run(policy, admin_user)
    assert job.result == RunResult.SUCCEEDED, (job.reason, logs(job))
    assert _transport_note(job, "src-vm-2") == (
        f"hotadd: disks attached to the proxy VM {proxy._moId}"
    )
    hotadd = SnapshotArtifact.objects.get(run=job, kind="hotadd")
    assert hotadd.removed_at is not None  # recorded before attaching, forgotten once detached
    assert hotadd.data["proxy_vm"] == proxy._moId and len(hotadd.data["files"]) == 2
    assert all("snapshot" in f for f in hotadd.data["files"])  # the snapshot's frozen disks
    assert [d.backing.fileName for d in vcsim.disks(vcsim.proxy_vm)] == before
    _check_restores(vcsim, job, "src-vm-2", tmp_path)


def test_hotadd_from_a_proxy_on_another_host_falls_back_to_nbd_and_says_why(
    vcsim, admin_user, tmp_path, settings
):
    remote = vcsim.find_vm(vcsim.remote_proxy_vm)
    settings.VMWARE_HOTADD_VM = remote._moId
    before = [d.backing.fileName for d in vcsim.disks(vcsim.remote_proxy_vm)]
    connection = connect(vcsim, admin_user)
    policy = protect(
        connection, ["src-vm-1"], admin_user, tmp_path, transport_order=["hotadd", "nbd"]
    )

    job = run(policy, admin_user)
    assert job.result == RunResult.SUCCEEDED, (job.reason, logs(job))
    note = _transport_note(job, "src-vm-1")
    host = vcsim.find_vm("src-vm-1").runtime.host._moId
    assert note.startswith(f"nbd: HTTPS range reads from {vcsim.host}:{vcsim.port}")
    assert (
        f"not used: hotadd: the proxy VM {vcsim.remote_proxy_vm} runs on host "
        f"{remote.runtime.host._moId}, src-vm-1 on {host}"
    ) in note
    # Never tried blindly: nothing was attached to the remote proxy, nothing recorded for it.
    assert not SnapshotArtifact.objects.filter(kind="hotadd").exists()
    assert [d.backing.fileName for d in vcsim.disks(vcsim.remote_proxy_vm)] == before
    _check_restores(vcsim, job, "src-vm-1", tmp_path)


def test_san_reads_the_extents_from_the_datastore_mount(vcsim, admin_user, tmp_path, settings):
    settings.VMWARE_SAN_PATHS = {vcsim.datastore: str(vcsim.datastore_dir)}
    connection = connect(vcsim, admin_user)
    policy = protect(connection, ["src-vm-1"], admin_user, tmp_path)  # default order

    job = run(policy, admin_user)
    assert job.result == RunResult.SUCCEEDED, (job.reason, logs(job))
    note = _transport_note(job, "src-vm-1")
    assert note.startswith("san: extents read from the datastore's mount on this proxy")
    assert "hotadd: this proxy is not a VM known to vSphere" in note
    _check_restores(vcsim, job, "src-vm-1", tmp_path)


def test_an_order_with_no_usable_mode_fails_the_vm_with_every_reason(
    vcsim, admin_user, tmp_path, settings
):
    settings.VMWARE_SAN_PATHS = {"OtherDS": str(tmp_path)}
    connection = connect(vcsim, admin_user)
    policy = protect(
        connection, ["src-vm-1"], admin_user, tmp_path, transport_order=["hotadd", "san"]
    )

    job = run(policy, admin_user)
    assert job.result == RunResult.FAILED
    message = job.tasks.get(kind=TaskKind.VM).message
    assert "no transport of the policy's order can read src-vm-1 from this proxy" in message
    assert "hotadd: this proxy is not a VM known to vSphere" in message
    assert f"san: datastore {vcsim.datastore} is not mounted on this proxy" in message
    # The snapshot taken before the choice was removed all the same.
    snapshot = SnapshotArtifact.objects.get(run=job, kind="snapshot")
    assert snapshot.removed_at is not None
