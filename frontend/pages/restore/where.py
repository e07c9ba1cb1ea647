"""The wizard's "where" step: a disk to a file on the proxy or to a vSphere datastore; the whole
VM as a new VM on a host of its own hypervisor (a directory for its disks on a KVM host, a
datastore on vCenter/ESXi). The datastores listed are those the last sync recorded for the
chosen connection; changing the connection re-renders them (HTMX), and without JavaScript the
server's check names the right ones."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from django import forms
from django.db.models import QuerySet
from django.http import QueryDict
from django.urls import reverse

from frontend.forms import ConsoleForm
from frontend.templatetags.console_tags import binary_bytes
from inventory.choices import ObjectKind
from inventory.models import Connection, InventoryObject, VirtualMachine
from storage.restore_targets import FAMILY_NAMES, KVM, VSPHERE, family, kinds_of

WHERE_FIELDS = ("to", "path", "format", "connection", "name", "datastore", "ds_path", "start")
# The wizard's field for a disk's path inside a datastore; the API calls it ``path``.
DS_PATH = "ds_path"


class WhereStep(ConsoleForm):
    to = forms.ChoiceField(
        required=False,
        choices=[("file", "A file on the proxy"), ("datastore", "A vSphere datastore")],
        label="Restore the disk to",
    )
    path = forms.CharField(required=False, label="Path")
    format = forms.ChoiceField(
        required=False, choices=[("raw", "raw (sparse)"), ("qcow2", "qcow2")], label="File format"
    )
    connection = forms.ModelChoiceField(
        queryset=Connection.objects.none(), required=False, label="KVM host", empty_label=None
    )
    name = forms.CharField(required=False, label="Name of the new VM")
    datastore = forms.ChoiceField(
        required=False,
        label="Datastore",
        error_messages={"invalid_choice": "Choose one of the chosen connection's datastores."},
    )
    ds_path = forms.CharField(required=False, label="Path in the datastore")
    start = forms.BooleanField(required=False, label="Start it once defined")


def restorable(user: Any, fam: str) -> QuerySet[Connection]:
    """Connections of a hypervisor family ``user`` may restore to."""
    return (
        Connection.objects.restrict(user, "restore")
        .filter(kind__in=kinds_of(fam))
        .order_by("name", "pk")
    )


def datastores(connection_pk: int | None) -> list[InventoryObject]:
    if connection_pk is None:
        return []
    return list(
        InventoryObject.objects.filter(
            connection_id=connection_pk, kind=ObjectKind.DATASTORE
        ).order_by("name", "pk")
    )


def _datastore_label(store: InventoryObject) -> str:
    if store.free_bytes is None:
        return store.name
    total = f" of {binary_bytes(store.capacity_bytes)}" if store.capacity_bytes else ""
    return f"{store.name} — {binary_bytes(store.free_bytes)} free{total}"


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class WherePlan:
    """What the where step asks, given the VM, what is restored and the user's targets."""

    def __init__(self, user: Any, vm: VirtualMachine, values: dict[str, Any]) -> None:
        self.user, self.vm, self.values = user, vm, values
        self.source = family(vm.connection.kind)
        self.whole_vm = values.get("what") == "vm"
        # A whole VM goes to its own hypervisor; a disk goes to a file or a vSphere datastore.
        self.family = (self.source or KVM) if self.whole_vm else VSPHERE
        self.targets = restorable(user, self.family)

    @property
    def to_vsphere(self) -> bool:
        return self.family == VSPHERE

    @cached_property
    def offers_datastore(self) -> bool:
        """A disk may go to a vSphere datastore: the user may restore to a vCenter/ESXi."""
        return not self.whole_vm and self.targets.exists()

    def datastore_connection(self, data: QueryDict, initial: dict[str, Any]) -> int | None:
        """The connection whose datastores are listed: the one chosen, if the user may."""
        chosen = _int(data.get("connection")) or _int(initial.get("connection"))
        pks = list(self.targets.values_list("pk", flat=True))
        return chosen if chosen in pks else (pks[0] if pks else None)

    def configure(self, form: WhereStep, data: QueryDict, initial: dict[str, Any]) -> None:
        fields = form.fields
        fields["connection"].queryset = self.targets  # type: ignore[attr-defined]
        fields["connection"].label = FAMILY_NAMES[self.family]
        vm = self.vm
        fields["connection"].label_from_instance = (  # type: ignore[attr-defined]
            lambda c: f"{c.name} (the original host)" if c.pk == vm.connection_id else c.name
        )
        if self.family == VSPHERE:
            # Another connection, other datastores: the field is re-rendered for it.
            fields["connection"].widget.attrs.update(
                {
                    "hx-get": reverse("frontend:restore"),
                    "hx-trigger": "change",
                    "hx-include": "#restore-wizard",
                    "hx-vals": '{"step": "where"}',
                    "hx-select": "#restore-datastore-field",
                    "hx-target": "#restore-datastore-field",
                    "hx-swap": "outerHTML",
                }
            )
        stores = datastores(self.datastore_connection(data, initial))
        fields["datastore"].choices = [(s.name, _datastore_label(s)) for s in stores]  # type: ignore[attr-defined]
        fields["datastore"].help_text = (
            "As of the connection's last sync; the new VM's disks are uploaded there."
            if self.whole_vm
            else "As of the connection's last sync."
        )
        if not stores:
            fields["datastore"].help_text = "No datastore known: sync the connection first."
        path = fields["path"]
        if self.whole_vm:
            path.label = "Directory for the new VM's disks"
            path.help_text = (
                "An absolute directory on the KVM host, e.g. /var/lib/libvirt/images; the "
                "disks become qcow2 files named after the new VM."
            )
            if self.family == VSPHERE:
                fields["start"].label = "Power it on once created"
            return
        if not self.offers_datastore:
            fields["to"].choices = [("file", "A file on the proxy")]  # type: ignore[attr-defined]
        path.label = "File to write"
        path.help_text = (
            "An absolute path on the proxy that runs the restore, e.g. "
            f"/srv/restore/{vm.name}-{self.values.get('disk')}.raw. Restores never "
            "overwrite: the file must not exist yet."
        )
        if self.source == VSPHERE:
            fields["format"].choices = [("raw", "raw (sparse)")]  # type: ignore[attr-defined]
            fields["format"].help_text = "Disks of vSphere VMs are written raw."
        fields[DS_PATH].help_text = (
            "folder/name.vmdk inside the datastore (a descriptor and its -flat.vmdk are "
            "written); neither may exist yet."
        )

    def initial(self, initial: dict[str, Any]) -> None:
        vm = self.vm
        initial.setdefault("format", "raw")
        initial.setdefault("to", "file")
        if self.targets.filter(pk=vm.connection_id).exists():
            initial.setdefault("connection", vm.connection_id)
        if self.whole_vm:
            initial.setdefault("name", f"{vm.name}-restored")
        else:
            initial.setdefault(
                DS_PATH, f"{vm.name}-restored/{vm.name}-{self.values.get('disk')}.vmdk"
            )
        home = (
            InventoryObject.objects.filter(disks__vm=vm, kind=ObjectKind.DATASTORE)
            .values_list("name", flat=True)
            .first()
        )
        names = [s.name for s in datastores(self.datastore_connection(QueryDict(), initial))]
        if names:
            initial.setdefault("datastore", home if home in names else names[0])

    def request_body(self) -> dict[str, Any]:
        """The restore request as the API takes it (only what the user gave)."""
        v = self.values
        body: dict[str, Any] = {"what": v.get("what")}
        if v.get("what") == "disk":
            body.update(disk=v.get("disk"), to=v.get("to") or "file")
            if body["to"] == "file":
                body.update(format=v.get("format") or "raw")
                if v.get("path"):
                    body["path"] = v["path"]
                return body
            if v.get(DS_PATH):
                body["path"] = v[DS_PATH]
        else:
            body.update(name=v.get("name") or None, start=bool(v.get("start")))
            if self.family == KVM and v.get("path"):
                body["path"] = v["path"]
        if v.get("connection") is not None:
            body["connection"] = v["connection"].pk
        if v.get("datastore") and (self.family == VSPHERE):
            body["datastore"] = v["datastore"]
        return {k: val for k, val in body.items() if val is not None}

    def field_for(self, key: str) -> str:
        """The wizard's field for an error the API reports on ``key``."""
        if key == "path" and not self.whole_vm and self.values.get("to") == "datastore":
            return DS_PATH
        return key
