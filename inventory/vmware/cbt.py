"""Resetting Changed Block Tracking on a VM, VMware's documented cure for CBT that went wrong
(the vSphere 6.0 bug, a host crash): turn it off, let a snapshot cycle apply that to the
running VM, turn it on again. Change IDs handed out before are then rejected by the host, so the
next backup reads in full (storing only new chunks) and says why."""

from __future__ import annotations

from pyVmomi import vim

from inventory.vmware.placement import vm_properties, vm_ref
from inventory.vmware.session import Session
from inventory.vmware.snapshot import PREFIX, remove, snapshot_name


def _set(session: Session, vm: vim.VirtualMachine, enabled: bool, name: str) -> None:
    spec = vim.vm.ConfigSpec(changeTrackingEnabled=enabled)
    state = "on" if enabled else "off"
    session.wait(vm.ReconfigVM_Task(spec), what=f"turning CBT {state} on {name}")


def reset_cbt(session: Session, moref: str, name: str = "") -> str:
    """Reset CBT on one VM; returns what was done, for the audit log and the user."""
    props = vm_properties(session, moref, ["name", "runtime.powerState"], name)
    name = props.get("name", name or moref)
    vm = vm_ref(session, moref)
    _set(session, vm, False, name)
    if props.get("runtime.powerState") == "poweredOn":
        # A running VM applies a CBT change at its next stun: a snapshot created and removed.
        cycle = snapshot_name().replace(PREFIX, f"{PREFIX}cbt-reset-", 1)
        snapshot = session.wait(
            vm.CreateSnapshot_Task(name=cycle, description="", memory=False, quiesce=False),
            what=f"applying the CBT change on {name}",
        )
        remove(session, snapshot, cycle)
    _set(session, vm, True, name)
    return f"CBT reset on {name}: the next backup reads it in full."
