"""The catalog: database rows mirroring the manifests in a repository.

The repository is the truth; the rows make it searchable. ``import_catalog`` rebuilds the rows of
a repository from its manifests alone (the database can be lost; the backups must not be).
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from inventory.models import VirtualMachine
from storage.choices import Consistency, RestorePointState
from storage.engine.manifest import Manifest
from storage.engine.repository import Repository as EngineRepository
from storage.engine_access import open_repository, vm_key_for
from storage.models import Repository, RestorePoint, RestorePointDisk


def vms_by_key() -> dict[str, VirtualMachine]:
    """Inventory VMs by their repository key (computed once per import, not per manifest)."""
    present = VirtualMachine.objects.filter(present=True).select_related("connection")
    return {vm_key_for(vm): vm for vm in present}


@transaction.atomic
def record_manifest(
    repository: Repository,
    manifest: Manifest,
    *,
    run: Any = None,
    vm: VirtualMachine | None = None,
    known_vms: dict[str, VirtualMachine] | None = None,
) -> RestorePoint:
    point, _ = RestorePoint.objects.update_or_create(
        repository=repository,
        point_id=manifest.id,
        defaults={
            "vm": vm if vm is not None else (known_vms or vms_by_key()).get(manifest.vm_key),
            "vm_key": manifest.vm_key,
            "vm_name": manifest.vm_name,
            "run": run,
            "created_at": manifest.created,
            "state": RestorePointState.COMMITTED,
            "consistency": manifest.consistency
            if manifest.consistency in Consistency.values
            else Consistency.CRASH,
            "logical_bytes": manifest.stats.logical_bytes,
            "read_bytes": manifest.stats.read_bytes,
            "stored_bytes": manifest.stats.stored_bytes,
            "new_unique_bytes": manifest.stats.new_unique_bytes,
            "manifest_path": manifest.key,
            "immutable_until": manifest.immutable_until,
        },
    )
    point.disks.all().delete()
    RestorePointDisk.objects.bulk_create(
        RestorePointDisk(
            restore_point=point,
            disk=(point.vm.disks.filter(device_key=d.device_key).first() if point.vm else None),
            device_key=d.device_key,
            label=d.label,
            capacity_bytes=d.size,
            index_path=d.index,
            read_bytes=d.read_bytes,
            stored_bytes=d.stored_bytes,
            change_token=d.change_token,
            full_read_reason=d.full_read_reason,
            checksum=d.sha256 or "",
        )
        for d in manifest.disks
    )
    return point


def import_catalog(
    repository: Repository, engine: EngineRepository | None = None
) -> tuple[int, int]:
    """Create the rows of every manifest not yet in the catalog. Returns (added, already known)."""
    engine = engine or open_repository(repository)
    known = set(repository.restore_points.values_list("point_id", flat=True))
    added = 0
    vms = vms_by_key()
    for key in engine.manifest_keys():
        point_id = key.rsplit("/", 1)[-1]
        if point_id in known:
            continue
        record_manifest(repository, engine.read_manifest(key), known_vms=vms)
        added += 1
    return added, len(known)
