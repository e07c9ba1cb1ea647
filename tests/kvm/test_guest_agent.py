"""Application consistency through a real QEMU guest agent: a small Linux guest (Debian's kernel,
busybox and qemu-ga in an initramfs, tests/kvm/guest.py) runs the agent; the backup freezes the
guest's file systems through it before the checkpoint and thaws them right after."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from inventory.kvm.libvirt_env import (
    GuestBoot,
    define_test_domain,
    disk_aliases,
    guest_flush,
    guest_write,
    remove_domain,
)
from jobs import engine, services
from jobs.choices import RunResult, Trigger
from storage.engine.reader import restore_disk
from storage.engine_access import open_repository
from storage.models import RestorePoint
from tests.kvm import guest
from tests.kvm.conftest import kvm_unavailable
from tests.kvm.nbd_fixtures import run
from tests.kvm.protect import protect
from tests.storage.helpers import sha256

pytestmark = pytest.mark.django_db(transaction=True)
MiB = 1024 * 1024


def _agent(domain, command: str) -> dict:
    import libvirt_qemu

    return json.loads(libvirt_qemu.qemuAgentCommand(domain, json.dumps({"execute": command}), 5, 0))


@pytest.fixture
def agent_domain(libvirt_conn, tmp_path: Path) -> Iterator:
    import libvirt

    absent = guest.missing()
    if absent:
        kvm_unavailable(f"guest-agent test guest incomplete, missing: {absent}")
    boot = GuestBoot(
        kernel=guest.copy_kernel(tmp_path / "vmlinuz"),
        initrd=guest.build_initramfs(tmp_path / "initrd.gz"),
        console_log=tmp_path / "console.log",
    )
    name = f"bc-agent-{uuid.uuid4().hex[:8]}"
    domain = define_test_domain(
        libvirt_conn, name, [tmp_path / "disk0.qcow2"], tmp_path, disk_size=32 * MiB, boot=boot
    )
    try:
        deadline = time.monotonic() + 180  # a kernel boot under TCG on a busy machine
        while True:
            try:
                _agent(domain, "guest-ping")
                break
            except libvirt.libvirtError as exc:
                # A guest whose init died reboots, and the domain (on_reboot: destroy) stops.
                if time.monotonic() > deadline or not domain.isActive():
                    console = boot.console_log.read_text(errors="replace")[-2000:]
                    raise AssertionError(
                        f"guest agent never answered; console:\n{console}"
                    ) from exc
                time.sleep(1)
        yield domain
    finally:
        remove_domain(domain)


def test_backup_with_a_guest_agent_is_application_consistent(
    agent_domain, libvirt_env, admin_user, tmp_path
):
    alias = disk_aliases(agent_domain)[0]
    guest_write(agent_domain, alias, 4 * MiB, 2 * MiB, 0x6B)
    policy = protect(
        str(libvirt_env.socket_path),
        [agent_domain.name()],
        admin_user,
        tmp_path / "repo",
        consistency="application",
    )
    job = services.start_run(policy, trigger=Trigger.MANUAL, acting_user=admin_user)
    engine.execute_run(job.pk)
    job.refresh_from_db()
    assert job.result == RunResult.SUCCEEDED, job.reason
    point = RestorePoint.objects.get(run=job)
    assert point.consistency == "application"
    assert not job.logs.filter(message__contains="crash-consistent").exists()
    snapshot = job.tasks.get(phase="snapshot")
    assert "frozen by the guest agent" in snapshot.message
    # Thawed again: a backup must never leave the guest's file systems frozen.
    assert _agent(agent_domain, "guest-fsfreeze-status")["return"] == "thawed"

    guest_flush(agent_domain, alias)
    disk = Path(agent_domain.XMLDesc(0).split("<source file='")[1].split("'")[0])
    expected = tmp_path / "expected.raw"
    run("qemu-img", "convert", "-U", "-O", "raw", disk, expected)
    repo = open_repository(policy.repository)
    restored = tmp_path / "restored.raw"
    restore_disk(repo, repo.read_manifest(point.manifest_path), "sda", restored)
    assert sha256(restored) == sha256(expected)
