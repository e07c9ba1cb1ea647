"""The vSphere connector registered for vCenter and ESXi connections (inventory.adapters)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from pyVmomi import vmodl

from inventory.adapters import (
    Capabilities,
    InventorySnapshot,
    RecordArtifact,
    RestoreJob,
    RestoreOutcome,
)
from inventory.vmware import restore, snapshot, transports
from inventory.vmware.discovery import discover
from inventory.vmware.placement import vm_ref
from inventory.vmware.session import session_for
from inventory.vmware.vmconfig import KEY


class VSphereConnector:
    kind = "vsphere"
    config_key = KEY

    def capabilities(self, connection: Any) -> Capabilities:
        offered = transports.ProxyConfig.load().offered()
        return Capabilities(change_tracking=True, quiesce=True, transports=offered)

    def discover(self, connection: Any) -> InventorySnapshot:
        return discover(session_for(connection))

    def backup_snapshot(
        self,
        connection: Any,
        vm: Any,
        *,
        quiesce: bool,
        record: RecordArtifact,
        since: dict[str, str],
    ) -> AbstractContextManager[snapshot.VMwareSnapshot]:
        # ``since`` is not needed: vSphere answers changes between any two change IDs of a
        # tracking period, so the snapshot is the same for a full and an incremental.
        return snapshot.backup_snapshot(session_for(connection), vm, quiesce=quiesce, record=record)

    def restore_vm(self, connection: Any, job: RestoreJob) -> RestoreOutcome:
        return restore.restore_vm_job(connection, job)

    def restore_disk(self, connection: Any | None, job: RestoreJob) -> RestoreOutcome:
        return restore.restore_disk_job(connection, job)

    def remove_artifact(self, connection: Any, kind: str, data: dict[str, Any]) -> None:
        session = session_for(connection)
        try:
            if kind == "snapshot":
                snapshot.remove_named(session, vm_ref(session, data["vm"]), data["name"])
            elif kind == "hotadd":
                transports.detach(session, vm_ref(session, data["proxy_vm"]), data["files"])
        except vmodl.fault.ManagedObjectNotFound:
            pass  # the VM is gone, and its snapshots with it
