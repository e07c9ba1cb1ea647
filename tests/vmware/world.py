"""Building blocks for backup tests against vcsim: a vCenter connection synced into the
database, a repository, a policy protecting named VMs, runs through the real engine, and the
checks that a restore point restores to the disk as it was."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pyVmomi import vmodl

from inventory import services as inventory_services
from inventory.models import Connection, VirtualMachine
from inventory.tasks import sync_connection
from jobs import engine, services
from jobs.choices import Trigger
from jobs.models import JobRun
from storage import services as storage_services
from storage.engine.reader import restore_disk
from storage.engine_access import open_repository
from storage.models import RestorePoint
from tests.vmware.conftest import Vcsim, sha256_of_file

BLOCK = 64 * 1024
CHUNK = 4 * 1024 * 1024  # the repository's chunk: full backups store whole windows


def connect(vcsim: Vcsim, user: Any, *, name: str = "vcsim", **data: Any) -> Connection:
    """A vCenter connection pinned to the simulator's certificate, its inventory synced."""
    connection = inventory_services.create_connection(
        data={
            "name": name,
            "kind": "vcenter",
            "address": vcsim.host,
            "port": vcsim.port,
            "username": vcsim.user,
            "tls_fingerprint": vcsim.thumbprint,
            **data,
        },
        secret=vcsim.password,
        acting_user=user,
    )
    sync_connection(connection.pk)
    return connection


def protect(
    connection: Connection, names: list[str], user: Any, tmp_path: Path, **options: Any
) -> Any:
    repository = storage_services.create_repository(
        data={"name": "primary", "kind": "filesystem", "location": str(tmp_path / "repo")},
        secret="",
        passphrase="pw",
        acting_user=user,
    )
    vms = [VirtualMachine.objects.get(connection=connection, name=name) for name in names]
    return services.create_policy(
        data={
            "name": "vsphere-nightly",
            "repository": repository,
            "options": {"consistency": "crash", **options},
        },
        vms=vms,
        excluded_vms=[],
        rules=[],
        schedules=[],
        acting_user=user,
    )


def run(policy: Any, user: Any) -> JobRun:
    started = services.start_run(policy, trigger=Trigger.MANUAL, acting_user=user)
    engine.execute_run(started.pk)
    started.refresh_from_db()
    return started


def logs(job: JobRun) -> list[str]:
    return list(job.logs.order_by("id").values_list("message", flat=True))


def point_of(job: JobRun, vm_name: str) -> RestorePoint:
    return RestorePoint.objects.get(run=job, vm__name=vm_name)


def disk_keys(vcsim: Vcsim, vm_name: str) -> list[str]:
    return [str(d.key) for d in vcsim.disks(vm_name)]


def restored_sha256(point: RestorePoint, device_key: str, target: Path) -> str:
    repo = open_repository(point.repository)
    restore_disk(repo, repo.read_manifest(point.manifest_path), device_key, target)
    return sha256_of_file(target)


def allocated_windows(path: Path) -> int:
    """Bytes a full backup reads: the non-zero 64 KiB blocks (CBT's ``*``) widened to whole
    repository chunks."""
    windows = set()
    zero = bytes(BLOCK)
    with open(path, "rb") as f:
        offset = 0
        while block := f.read(BLOCK):
            if block != zero[: len(block)]:
                windows.add(offset // CHUNK)
            offset += len(block)
    size = path.stat().st_size
    return sum(min(CHUNK, size - w * CHUNK) for w in windows)


def snapshots_of(vcsim: Vcsim, vm_name: str) -> list[str]:
    """Names of the VM's snapshots, read through the PropertyCollector (reading the unset
    ``vm.snapshot`` property directly makes vcsim drop the connection)."""
    from inventory.vmware.discovery import snapshot_names

    vm = vcsim.find_vm(vm_name)
    collector = vmodl.query.PropertyCollector
    spec = collector.FilterSpec(
        objectSet=[collector.ObjectSpec(obj=vm)],
        propSet=[collector.PropertySpec(type=type(vm), pathSet=["snapshot.rootSnapshotList"])],
    )
    found = vcsim.si.content.propertyCollector.RetrieveContents([spec])
    props = {p.name: p.val for p in found[0].propSet} if found else {}
    return snapshot_names(props.get("snapshot.rootSnapshotList"))
