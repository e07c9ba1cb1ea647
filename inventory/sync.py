"""Apply a connector's discovered inventory to the database, keeping user data.

Rows are matched by the hypervisor's id, so a renamed or moved VM keeps its row: its tags, its
explicit policy membership and its restore points stay attached. A VM that disappears is marked
not present rather than deleted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from backupconsole import audit
from inventory.adapters import InventorySnapshot
from inventory.models import Connection, InventoryObject, Tag, VirtualDisk, VirtualMachine


@dataclass
class SyncResult:
    objects: int = 0
    vms_added: int = 0
    vms_updated: int = 0
    vms_gone: int = 0


def apply_inventory(
    connection: Connection, snapshot: InventorySnapshot, *, acting_user: Any
) -> SyncResult:
    from jobs.services import refresh_all_members

    now = timezone.now()
    result = SyncResult()
    with transaction.atomic():
        objects: dict[str, InventoryObject] = {}
        for found in snapshot.objects:
            obj, _ = InventoryObject.objects.update_or_create(
                connection=connection,
                external_id=found.external_id,
                defaults={
                    "kind": found.kind,
                    "name": found.name,
                    "capacity_bytes": found.capacity_bytes,
                    "free_bytes": found.free_bytes,
                    "last_seen_at": now,
                },
            )
            objects[found.external_id] = obj
        for found in snapshot.objects:  # parents once every object exists
            parent = objects.get(found.parent) if found.parent else None
            if objects[found.external_id].parent_id != (parent.pk if parent else None):
                objects[found.external_id].parent = parent
                objects[found.external_id].save(update_fields=["parent"])
        result.objects = len(objects)
        seen = []
        for found_vm in snapshot.vms:
            vm, created = VirtualMachine.objects.update_or_create(
                connection=connection,
                external_id=found_vm.external_id,
                defaults={
                    "name": found_vm.name,
                    "instance_uuid": found_vm.instance_uuid,
                    "power_state": found_vm.power_state,
                    "guest_os": found_vm.guest_os,
                    "cpus": found_vm.cpus,
                    "memory_mib": found_vm.memory_mib,
                    "datacenter": objects.get(found_vm.datacenter or ""),
                    "cluster": objects.get(found_vm.cluster or ""),
                    "host": objects.get(found_vm.host or ""),
                    "folder": objects.get(found_vm.folder or ""),
                    "present": True,
                    "last_seen_at": now,
                },
            )
            seen.append(vm.pk)
            result.vms_added += created
            result.vms_updated += not created
            # Hypervisor tags are added; tags users gave the VM in the console are kept.
            vm.tags.add(*[Tag.objects.get_or_create(name=name)[0] for name in found_vm.tags])
            keys = []
            for disk in found_vm.disks:
                VirtualDisk.objects.update_or_create(
                    vm=vm,
                    device_key=disk.device_key,
                    defaults={
                        "label": disk.label,
                        "capacity_bytes": disk.capacity_bytes,
                        "location": disk.location,
                        "mode": disk.mode,
                        "datastore": objects.get(disk.datastore or ""),
                    },
                )
                keys.append(disk.device_key)
            vm.disks.exclude(device_key__in=keys).delete()
        gone = connection.vms.filter(present=True).exclude(pk__in=seen)
        result.vms_gone = gone.update(present=False)
        connection.last_synced_at = now
        connection.save(update_fields=["last_synced_at"])
        refresh_all_members()
        audit.record(
            "inventory.connection.sync",
            connection,
            acting_user=acting_user,
            after=result.__dict__,
        )
    return result
