"""Leftovers on vcsim: a proxy process killed in the middle of a HotAdd backup leaves a snapshot
and disks attached to the proxy VM, which the sweeper removes from the recorded artifacts; the
snapshot hunter removes the product's snapshots nothing recorded (and only those), and
consolidates VMs once no proxy holds their disks any more."""

from __future__ import annotations

import signal
import subprocess
import sys
from datetime import timedelta

import pytest
from pyVmomi import vim

from inventory.models import VirtualMachine
from inventory.vmware import transports
from inventory.vmware.hunter import hunt
from inventory.vmware.session import session_for
from jobs import services
from jobs.choices import RunResult, Trigger
from jobs.models import SnapshotArtifact
from jobs.runstate import finish
from jobs.sweeper import sweep
from tests.integration.workers import ROOT, _process_env
from tests.vmware.conftest import MiB, wait_task
from tests.vmware.world import connect, logs, protect, snapshots_of

pytestmark = pytest.mark.django_db(transaction=True)

# A proxy's backup of one VM, stopped dead once the snapshot's disks are being read: the
# product's own connector and artifact recorder, in a process of its own that is SIGKILLed.
PROXY = """
import sys, time
import django
django.setup()
from inventory.adapters import get_connector
from inventory.models import VirtualMachine
from jobs.backup import _recorder
from jobs.models import JobRun

run = JobRun.objects.get(pk=int(sys.argv[1]))
vm = VirtualMachine.objects.select_related("connection").get(pk=int(sys.argv[2]))
context = get_connector(vm.connection.kind).backup_snapshot(
    vm.connection, vm, quiesce=False, record=_recorder(run, vm), since={}
)
snapshot = context.__enter__()
for disk in snapshot.disks.values():
    disk.source().read(0, 65536)
print("READING", snapshot.transport_note, flush=True)
time.sleep(600)
"""


def _disk_files(vcsim, name: str) -> list[str]:
    return [d.backing.fileName for d in vcsim.disks(name)]


def _needs_consolidation(vcsim, name: str) -> bool:
    return bool(vcsim.find_vm(name).runtime.consolidationNeeded)


def test_a_proxy_killed_mid_hotadd_backup_leaves_nothing_after_the_sweep(
    vcsim, admin_user, tmp_path
):
    vcsim.create_vm("crashed-src")
    proxy = vcsim.find_vm(vcsim.proxy_vm)
    proxy_disks = _disk_files(vcsim, vcsim.proxy_vm)
    connection = connect(vcsim, admin_user)
    policy = protect(connection, ["crashed-src"], admin_user, tmp_path)
    run = services.start_run(policy, trigger=Trigger.MANUAL, acting_user=admin_user)
    vm = VirtualMachine.objects.get(name="crashed-src")

    env = {**_process_env(tmp_path), "BACKUPCONSOLE_VMWARE_HOTADD_VM": proxy._moId}
    child = subprocess.Popen(
        [sys.executable, "-c", PROXY, str(run.pk), str(vm.pk)],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "backupconsole.settings"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.startswith("READING hotadd:"), (line, child.stderr and child.stderr.read())
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()

    # What a crashed proxy leaves: our snapshot, and its disks still attached to the proxy VM.
    left = snapshots_of(vcsim, "crashed-src")
    assert len(left) == 1 and left[0].startswith("bc-backup-")
    assert len(_disk_files(vcsim, vcsim.proxy_vm)) == len(proxy_disks) + 1
    recorded = SnapshotArtifact.objects.filter(run=run, removed_at__isnull=True)
    assert sorted(recorded.values_list("kind", flat=True)) == ["hotadd", "snapshot"]

    finish(run, RunResult.FAILED, "Proxy stopped responding.")  # as the reaper would
    assert sweep(min_age=timedelta(0)) == 2
    assert snapshots_of(vcsim, "crashed-src") == []
    assert _disk_files(vcsim, vcsim.proxy_vm) == proxy_disks
    assert not _needs_consolidation(vcsim, "crashed-src")
    assert not SnapshotArtifact.objects.filter(removed_at__isnull=True).exists()
    removed = [m for m in logs(run) if m.startswith("Sweeper removed a leftover")]
    assert len(removed) == 2


def test_the_hunter_removes_only_unrecorded_leftovers_of_the_product(vcsim, admin_user, tmp_path):
    vcsim.create_vm("hunted", fill=False, size=MiB)
    source = vcsim.find_vm("hunted")
    names = ["before-upgrade", "bc-backup-20250101T000000000000", "bc-backup-20250101T000000000001"]
    for name in names:
        wait_task(vcsim.si, source.CreateSnapshot_Task(name=name, memory=False, quiesce=False))
    connection = connect(vcsim, admin_user)
    policy = protect(connection, ["hunted"], admin_user, tmp_path)
    # The last one belongs to a backup that is still running: recorded, run not finished.
    running = services.start_run(policy, trigger=Trigger.MANUAL, acting_user=admin_user)
    SnapshotArtifact.objects.create(
        connection=connection,
        vm=VirtualMachine.objects.get(name="hunted"),
        run=running,
        kind="snapshot",
        data={"vm": source._moId, "name": names[2]},
    )
    session = session_for(connection)
    young = hunt(session, in_use=[names[2]], older_than=timedelta(hours=1))
    assert young.removed == []  # just made: could be a backup that has only just begun

    assert sweep(min_age=timedelta(0)) == 1
    assert snapshots_of(vcsim, "hunted") == [names[0], names[2]]


def test_the_hunter_consolidates_once_no_proxy_holds_the_disks(vcsim, admin_user):
    vcsim.create_vm("consolidate-me", size=MiB)
    source = vcsim.find_vm("consolidate-me")
    proxy = vcsim.find_vm(vcsim.proxy_vm)
    snapshot = wait_task(
        vcsim.si, source.CreateSnapshot_Task(name="user", memory=False, quiesce=False)
    )
    frozen = next(
        d.backing.fileName
        for d in snapshot.config.hardware.device
        if isinstance(d, vim.vm.device.VirtualDisk)
    )
    controller = next(
        d
        for d in proxy.config.hardware.device
        if isinstance(d, vim.vm.device.VirtualSCSIController)
    )
    attach = vim.vm.device.VirtualDeviceSpec(
        operation="add",
        device=vim.vm.device.VirtualDisk(
            key=-1,
            controllerKey=controller.key,
            unitNumber=9,
            capacityInKB=1024,
            backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
                fileName=frozen, diskMode="independent_nonpersistent"
            ),
        ),
    )
    wait_task(vcsim.si, proxy.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[attach])))
    # Removing the snapshot while a proxy still holds its disk leaves the VM needing it.
    wait_task(vcsim.si, snapshot.RemoveSnapshot_Task(removeChildren=False))
    assert _needs_consolidation(vcsim, "consolidate-me")

    connection = connect(vcsim, admin_user)
    session = session_for(connection)
    listed = hunt(session, older_than=timedelta(0))
    assert listed.consolidation == ["consolidate-me"]
    locked = hunt(session, older_than=timedelta(0), consolidate=True)
    assert locked.consolidated == [] and locked.consolidation == ["consolidate-me"]
    assert any(f.startswith("consolidate-me: consolidation") for f in locked.failed)

    transports.detach(session, proxy, [frozen])
    done = hunt(session, older_than=timedelta(0), consolidate=True)
    assert done.consolidated == ["consolidate-me"] and done.failed == []
    assert not _needs_consolidation(vcsim, "consolidate-me")
