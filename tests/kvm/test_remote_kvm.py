"""A KVM host reached over the network, as a proxy that is not on the host reaches it: libvirt's
remote protocol over TCP (``qemu+tcp://``) and the backup exports over NBD on TCP with TLS and
client certificates (QEMU verifies the proxy, the proxy verifies QEMU against the CA).

The host is a private libvirtd listening on 127.0.0.1: the protocol path is the one a remote
host uses; only the distance differs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from inventory.kvm.libvirt_env import (
    LocalLibvirt,
    define_test_domain,
    disk_aliases,
    guest_flush,
    guest_write,
    missing_requirements,
    remove_domain,
)
from jobs import engine, services
from jobs.choices import RunResult, Trigger
from jobs.models import JobRun, SnapshotArtifact
from storage.engine.reader import restore_disk
from storage.engine_access import open_repository
from storage.models import RestorePoint
from tests.kvm.conftest import kvm_unavailable
from tests.kvm.nbd_fixtures import free_port, run
from tests.kvm.protect import protect
from tests.storage.helpers import sha256

pytestmark = pytest.mark.django_db(transaction=True)
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def remote_host(tmp_path_factory: pytest.TempPathFactory, tls_dir: Path) -> Iterator[LocalLibvirt]:
    missing = missing_requirements()
    if missing:
        kvm_unavailable("KVM test environment incomplete, missing: " + "; ".join(missing))
    root = tmp_path_factory.mktemp("remote-libvirt")
    with LocalLibvirt(root, tcp_port=free_port(), backup_tls_dir=tls_dir) as env:
        yield env


@pytest.fixture
def remote_world(remote_host, tls_dir, admin_user, tmp_path, settings):
    import libvirt

    settings.KVM_NBD_TLS_DIR = str(tls_dir)  # the proxy's CA and client certificate
    conn = libvirt.open(remote_host.tcp_uri)
    name = f"bc-remote-{uuid.uuid4().hex[:8]}"
    disks = [tmp_path / "disk0.qcow2", tmp_path / "disk1.qcow2"]
    domain = define_test_domain(conn, name, disks, tmp_path, disk_size=64 * MiB)
    policy = protect(remote_host.tcp_uri, [name], admin_user, tmp_path / "repo")
    try:
        yield {"domain": domain, "disks": disks, "policy": policy, "repository": policy.repository}
    finally:
        remove_domain(domain)
        conn.close()


def _run(policy, user) -> JobRun:
    job = services.start_run(policy, trigger=Trigger.MANUAL, acting_user=user)
    engine.execute_run(job.pk)
    job.refresh_from_db()
    return job


def _assert_restores(world, point: RestorePoint, tmp_path: Path, label: str) -> None:
    repo = open_repository(world["repository"])
    manifest = repo.read_manifest(point.manifest_path)
    domain = world["domain"]
    for index, alias in enumerate(disk_aliases(domain)):
        guest_flush(domain, alias)
        expected = tmp_path / f"{label}-{index}.expected"
        run("qemu-img", "convert", "-U", "-O", "raw", world["disks"][index], expected)
        restored = tmp_path / f"{label}-{index}.raw"
        restore_disk(repo, manifest, f"sd{chr(97 + index)}", restored)
        assert sha256(restored) == sha256(expected), (label, index)


def test_remote_host_is_read_over_nbd_with_tls(remote_world, admin_user, tmp_path):
    domain = remote_world["domain"]
    aliases = disk_aliases(domain)
    guest_write(domain, aliases[0], 0, 2 * MiB, 0x5A)
    guest_write(domain, aliases[1], 9 * MiB, MiB, 0xA5)

    full = _run(remote_world["policy"], admin_user)
    assert full.result == RunResult.SUCCEEDED, (full.reason, list(full.logs.values_list("message")))
    assert full.logs.filter(message__contains="nbdssl: NBD over TLS to 127.0.0.1:").exists()
    _assert_restores(remote_world, RestorePoint.objects.get(run=full), tmp_path, "full")

    guest_write(domain, aliases[0], 20 * MiB, 64 * 1024, 0x33)
    incr = _run(remote_world["policy"], admin_user)
    assert incr.result == RunResult.SUCCEEDED, incr.reason
    point = RestorePoint.objects.get(run=incr)
    read = {d.device_key: d.read_bytes for d in point.disks.all()}
    assert read == {"sda": 64 * 1024, "sdb": 0}  # dirty bitmaps work over TLS too
    _assert_restores(remote_world, point, tmp_path, "incr")
    assert not SnapshotArtifact.objects.filter(removed_at__isnull=True).exists()


def test_a_proxy_without_a_client_certificate_fails_with_the_reason(
    remote_world, admin_user, tmp_path, settings
):
    settings.KVM_NBD_TLS_DIR = str(tmp_path / "no-certificates")
    failed = _run(remote_world["policy"], admin_user)
    assert failed.result == RunResult.FAILED
    messages = " ".join(failed.logs.values_list("message", flat=True)) + failed.reason
    assert "client-cert.pem" in messages, messages
    assert not RestorePoint.objects.filter(run=failed).exists()
    # Nothing left on the host: no job, no checkpoint of ours.
    assert not SnapshotArtifact.objects.filter(removed_at__isnull=True).exists()
    assert not [c for c in remote_world["domain"].listAllCheckpoints()]
