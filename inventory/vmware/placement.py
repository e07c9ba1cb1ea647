"""Where things are: a VM by its moref, the datacenter above an object (its inventory path is the
``dcPath`` of datastore URLs), datastores by moref or name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyVmomi import vim, vmodl

from inventory.vmware.collector import retrieve
from inventory.vmware.session import Session, VSphereError, retrieve_one


def vm_ref(session: Session, moref: str) -> Any:
    return vim.VirtualMachine(moref, session.stub)


def vm_properties(session: Session, moref: str, paths: list[str], name: str = "") -> dict[str, Any]:
    try:
        return retrieve_one(session, vm_ref(session, moref), paths)
    except vmodl.fault.ManagedObjectNotFound as exc:
        raise VSphereError(
            f"{name or moref} is no longer in the vSphere inventory (deleted or re-registered)"
        ) from exc


def datacenter_of(session: Session, obj: Any) -> tuple[Any, str]:
    """The datacenter above ``obj`` and its inventory path ("DC0", or "Folder/DC0")."""
    root = session.content.rootFolder._moId
    datacenter, names = None, []
    while obj is not None and obj._moId != root:
        props = retrieve_one(session, obj, ["name", "parent"])
        if isinstance(obj, vim.Datacenter):
            datacenter = obj
        if datacenter is not None:
            names.append(props.get("name", ""))
        obj = props.get("parent")
    if datacenter is None:
        raise VSphereError("the object is not inside a datacenter")
    return datacenter, "/".join(reversed(names))


@dataclass(frozen=True)
class DatastoreInfo:
    obj: Any
    name: str
    url: str


def datastores(session: Session) -> dict[str, DatastoreInfo]:
    """Every datastore by moref (one round trip)."""
    return {
        found.moref: DatastoreInfo(found.obj, found.get("name", ""), found.get("info.url", ""))
        for found in retrieve(session, vim.Datastore, ["name", "info.url"])
    }


def datastore_named(session: Session, name: str) -> DatastoreInfo:
    for info in datastores(session).values():
        if info.name == name:
            return info
    raise VSphereError(f"no datastore named {name!r}")
