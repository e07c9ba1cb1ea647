"""Real `celery worker` proxies back up real libvirt/QEMU VMs: two proxies share one run, live
progress reaches the run's websocket, and a proxy killed mid-transfer fails the run with the
reason while the sweeper removes what it left on the hypervisor."""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections
from rest_framework.authtoken.models import Token

from backupconsole.asgi import application
from inventory.kvm.libvirt_env import define_test_domain, disk_aliases, guest_write, remove_domain
from jobs import services
from jobs.choices import RunResult, RunState, TaskKind, Trigger
from jobs.models import JobRun, SnapshotArtifact
from jobs.sweeper import fail_lost_runs, sweep
from storage.models import RestorePoint
from tests.kvm.protect import protect

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
MiB = 1024 * 1024


@pytest.fixture
def two_vms(libvirt_conn, kvm_domain, tmp_path):
    other = define_test_domain(
        libvirt_conn,
        f"{kvm_domain.name}-b",
        [tmp_path / "b0.qcow2"],
        tmp_path / "b",
        disk_size=64 * MiB,
    )
    try:
        yield [kvm_domain.domain, other]
    finally:
        remove_domain(other)


def _setup(libvirt_env, domains, admin_user, tmp_path, vm_data=8 * MiB):
    for dom in domains:
        for index, alias in enumerate(disk_aliases(dom)):
            guest_write(dom, alias, index * MiB, vm_data, 0x30 + index)
    return protect(
        str(libvirt_env.socket_path), [d.name() for d in domains], admin_user, tmp_path / "repo"
    )


def _wait(run_pk: int, states: set[str], timeout: float = 120) -> JobRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = JobRun.objects.get(pk=run_pk)
        if run.state in states:
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_pk} stayed {JobRun.objects.get(pk=run_pk).state}")


async def test_two_proxies_share_a_run_with_live_progress(
    celery_worker_process, libvirt_env, two_vms, admin_user, tmp_path
):
    await sync_to_async(celery_worker_process)("proxy-a")
    await sync_to_async(celery_worker_process)("proxy-b")
    policy = await sync_to_async(_setup)(libvirt_env, two_vms, admin_user, tmp_path)
    token = await sync_to_async(lambda: Token.objects.create(user=admin_user).key)()
    run = await sync_to_async(services.start_run)(
        policy, trigger=Trigger.MANUAL, acting_user=admin_user
    )
    ws = WebsocketCommunicator(
        application,
        f"/ws/runs/{run.pk}/",
        headers=[(b"authorization", f"Token {token}".encode()), (b"origin", b"http://127.0.0.1")],
    )
    assert (await ws.connect())[0]
    events = []
    while True:
        event = await ws.receive_json_from(timeout=120)
        events.append(event)
        if event["state"] == "finished":
            break
    await ws.disconnect()
    final = events[-1]
    assert final["result"] == RunResult.SUCCEEDED, final["reason"]
    disks = [t for e in events for t in e["tasks"] if t["kind"] == "disk" and t["bytes_done"]]
    assert disks and all(t["bottleneck"] in {"source", "proxy", "repository"} for t in disks)

    def check() -> None:
        saved = JobRun.objects.get(pk=run.pk)
        proxies = set(saved.tasks.filter(kind=TaskKind.VM).values_list("proxy__name", flat=True))
        assert proxies == {"proxy-a", "proxy-b"}, proxies
        assert RestorePoint.objects.filter(run=saved).count() == 2
        assert not SnapshotArtifact.objects.filter(removed_at__isnull=True).exists()

    await sync_to_async(check)()
    await sync_to_async(connections.close_all)()


def test_a_proxy_killed_mid_transfer_fails_the_run_and_leaves_nothing(
    celery_worker_process, libvirt_env, kvm_domain, admin_user, tmp_path, settings
):
    settings.PROXY_HEARTBEAT_SECONDS = 5  # as the worker was started with
    worker = celery_worker_process("proxy-a")
    policy = _setup(libvirt_env, [kvm_domain.domain], admin_user, tmp_path, vm_data=60 * MiB)
    run = services.start_run(policy, trigger=Trigger.MANUAL, acting_user=admin_user)
    # Kill the proxy as soon as the snapshot exists and data is moving.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        # Both recorded (the backup job, then the checkpoint): a kill between the two records
        # would leave only one, and the count below would not hold.
        if (
            SnapshotArtifact.objects.filter(run=run, kind__in=("backup-job", "checkpoint")).count()
            == 2
        ):
            break
        time.sleep(0.01)
    else:
        raise AssertionError("the backup never started")
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    # The reaper notices the silent proxy (three missed 5 s heartbeats)...
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline and not fail_lost_runs():
        time.sleep(1)
    saved = _wait(run.pk, {RunState.FINISHED}, timeout=5)
    assert saved.result == RunResult.FAILED and "proxy-a stopped responding" in saved.reason
    assert not RestorePoint.objects.filter(run=saved).exists()
    assert not any(Path(policy.repository.location, "snapshots").rglob("*"))
    # ...and the sweeper removes the backup job and the checkpoint it left.
    assert SnapshotArtifact.objects.filter(run=saved, removed_at__isnull=True).count() == 2
    assert sweep(min_age=timedelta(0)) == 2
    assert kvm_domain.domain.jobInfo()[0] == 0  # VIR_DOMAIN_JOB_NONE
    assert kvm_domain.domain.listAllCheckpoints() == []
    assert saved.logs.filter(message__contains="Sweeper removed").count() == 2
