"""The restore wizard's steps: VM → restore point → what → where → summary.

The state travels in the query string (hidden fields on the way forward), so there is no server
session to clean up and every URL can be bookmarked or sent to a colleague. Each request checks
every step before the one it shows, with the user's permissions; the rules of a valid restore are
the API's (RestoreRequestSerializer) and the storage service's (check_restore_target).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django import forms
from django.db.models import Count, Q, QuerySet
from django.http import QueryDict
from django_filters import FilterSet

from backupconsole.errors import ActionRefused
from frontend.forms import ConsoleForm
from frontend.pages.restore.where import WHERE_FIELDS, WherePlan, WhereStep
from frontend.templatetags.console_tags import binary_bytes
from inventory.filtersets import VirtualMachineFilterSet
from inventory.models import Connection, VirtualMachine
from storage.api.serializers import RestoreRequestSerializer
from storage.choices import USABLE_POINT_STATES, RestorePointState
from storage.models import RestorePoint
from storage.restore_targets import FAMILY_NAMES, family
from storage.services import check_restore_target

VM_LIST_LIMIT = 50


@dataclass(frozen=True)
class Step:
    name: str
    title: str
    fields: tuple[str, ...]


STEPS = (
    Step("vm", "Virtual machine", ("vm",)),
    Step("point", "Restore point", ("point",)),
    Step("what", "What", ("what", "disk")),
    Step("where", "Where", WHERE_FIELDS),
    Step("summary", "Summary", ()),
)
NAMES = tuple(step.name for step in STEPS)
STATE_FIELDS = tuple(name for step in STEPS for name in step.fields)


class VMStep(ConsoleForm):
    vm = forms.ModelChoiceField(
        queryset=VirtualMachine.objects.none(),
        label="Virtual machine",
        error_messages={"invalid_choice": "Choose a VM you may restore from the list."},
    )


class PointStep(ConsoleForm):
    point = forms.ModelChoiceField(
        queryset=RestorePoint.objects.none(),
        label="Restore point",
        error_messages={"invalid_choice": "Choose one of this VM's usable restore points."},
    )


class WhatStep(ConsoleForm):
    what = forms.ChoiceField(label="What to restore")
    disk = forms.ChoiceField(required=False, label="Disk")


class SummaryStep(ConsoleForm):
    pass


class RestoreWizard:
    def __init__(self, user: Any, data: QueryDict) -> None:
        self.user = user
        self.data = data
        self.values: dict[str, Any] = {}
        self.options: dict[str, Any] = {}  # the validated request, once the where step passed
        point_pk = _int(data.get("point"))
        if point_pk is not None and not data.get("vm"):
            # A link to a restore point alone (?point=) names its VM too.
            row = RestorePoint.objects.filter(pk=point_pk).values("vm_id").first()
            if row and row["vm_id"]:
                self.data = data.copy()
                self.data["vm"] = str(row["vm_id"])

    # --- what the user may restore -------------------------------------------------------------

    def restorable(self) -> QuerySet[RestorePoint]:
        """The restore points the user may restore: the API's rule (RestorePoint.restrict)."""
        return RestorePoint.objects.restrict(self.user, "restore")

    def vms(self) -> QuerySet[VirtualMachine]:
        """VMs with a usable restore point the user may restore."""
        usable = self.restorable().filter(state__in=USABLE_POINT_STATES).values("pk")
        return (
            VirtualMachine.objects.annotate(
                points=Count("restore_points", filter=Q(restore_points__in=usable))
            )
            .filter(points__gt=0)
            .select_related("connection")
            .order_by("name", "pk")
        )

    def vm_search(self) -> FilterSet:
        return VirtualMachineFilterSet({"q": self.data.get("q", "")}, queryset=self.vms())

    def points(self) -> QuerySet[RestorePoint]:
        """All of the VM's finished points (corrupt ones are listed, but cannot be chosen)."""
        return (
            self.restorable()
            .filter(vm=self.values["vm"])
            .exclude(state=RestorePointState.COMMITTING)
            .select_related("repository")
            .annotate(disk_count=Count("disks"))
            .order_by("-created_at", "-id")
        )

    def plan(self) -> WherePlan:
        return WherePlan(self.user, self.values["vm"], self.values)

    def targets(self) -> QuerySet[Connection]:
        """Hosts of the VM's own hypervisor the user may restore the whole VM to."""
        return WherePlan(self.user, self.values["vm"], {"what": "vm"}).targets

    def whole_vm_possible(self) -> bool:
        vm = self.values.get("vm")
        return bool(vm and family(vm.connection.kind) and self.targets().exists())

    def whole_vm_unavailable(self) -> str:
        """Why the whole VM cannot be restored ("" when it can)."""
        vm: VirtualMachine = self.values["vm"]
        source = family(vm.connection.kind)
        if source is None:
            return f"nothing restores VMs to {vm.connection.get_kind_display()} yet"
        if not self.targets().exists():
            return f"your role names no {FAMILY_NAMES[source]} to restore to"
        return ""

    def datastores_possible(self) -> bool:
        """Whether a disk can go to a vSphere datastore (the user may restore to one)."""
        return WherePlan(self.user, self.values["vm"], {"what": "disk"}).targets.exists()

    # --- the steps ------------------------------------------------------------------------------

    def form(self, name: str, *, bound: bool) -> ConsoleForm:
        data = self.data if bound else None
        initial = None if bound else self._initial(name)
        form: ConsoleForm
        if name == "vm":
            form = VMStep(data, initial=initial)
            form.fields["vm"].queryset = self.vms()  # type: ignore[attr-defined]
        elif name == "point":
            form = PointStep(data, initial=initial)
            form.fields["point"].queryset = self.points().filter(state__in=USABLE_POINT_STATES)  # type: ignore[attr-defined]
        elif name == "what":
            form = WhatStep(data, initial=initial)
            point: RestorePoint = self.values["point"]
            disk_to = "a file or a datastore" if self.datastores_possible() else "a file"
            choices = [("disk", f"One disk, to {disk_to}")]
            if self.whole_vm_possible():
                choices.insert(0, ("vm", "The whole VM, as a new VM"))
            form.fields["what"].choices = choices  # type: ignore[attr-defined]
            form.fields["disk"].choices = [  # type: ignore[attr-defined]
                (d.device_key, _disk_label(d)) for d in point.disks.all()
            ]
        elif name == "where":
            form = WhereStep(data, initial=initial)
            self.plan().configure(form, self.data, initial or {})
        else:
            form = SummaryStep(data)
        return form

    def _initial(self, name: str) -> dict[str, Any]:
        initial: dict[str, Any] = {
            key: self.data.get(key) for key in STATE_FIELDS if self.data.get(key)
        }
        if name == "point" and "point" not in initial:
            newest = self.points().filter(state__in=USABLE_POINT_STATES).first()
            initial["point"] = newest.pk if newest else None
        if name == "what":
            initial.setdefault("what", "disk")
            first = self.values["point"].disks.first()
            initial.setdefault("disk", first.device_key if first else "")
        if name == "where":
            self.plan().initial(initial)
        return initial

    def resolve(self, target: str) -> tuple[str, ConsoleForm]:
        """The step to show: ``target`` (unbound, filled from the state) when every step before it
        is valid, else the first invalid one with its errors."""
        stop = len(STEPS) if target == "confirm" else NAMES.index(target)
        for step in STEPS[:stop]:
            form = self.form(step.name, bound=True)
            if not form.is_valid():
                return step.name, form
            self.values.update(form.cleaned_data)
            if step.name == "where":
                errors = self._check_request()
                if errors:
                    return self._with_errors(errors)
        if target == "confirm":
            return "summary", self.form("summary", bound=True)
        return target, self.form(target, bound=False)

    def refuse(self, exc: ActionRefused) -> tuple[str, ConsoleForm]:
        """start_restore refused at the last moment: show the message where it belongs."""
        return self._with_errors({self.plan().field_for(exc.field or ""): [exc.message]})

    def first_missing(self) -> str:
        """Where a link without ``step`` lands: the first step whose inputs are missing."""
        for step in STEPS:
            if step.fields and not self.data.get(step.fields[0]):
                return step.name
        return "summary"

    def _check_request(self) -> dict[str, list[str]]:
        """The API's checks of the request and the service's checks of its target."""
        plan = self.plan()
        serializer = RestoreRequestSerializer(data=plan.request_body())
        if not serializer.is_valid():
            return {
                plan.field_for(key): [str(m) for m in messages]
                for key, messages in serializer.errors.items()
            }
        options = dict(serializer.validated_data)
        try:
            check_restore_target(self.values["point"], options, self.user)
        except ActionRefused as exc:
            return {plan.field_for(exc.field or ""): [exc.message]}
        self.options = options
        return {}

    def _with_errors(self, errors: dict[str, list[str]]) -> tuple[str, ConsoleForm]:
        """The step whose fields the errors are about (the what step for the disk), bound to the
        state, with the errors next to those fields; others go to the summary."""
        for name in ("what", "where"):
            fields = next(step.fields for step in STEPS if step.name == name)
            if any(key in fields for key in errors):
                form = self.form(name, bound=True)
                form.is_valid()
                for key, messages in errors.items():
                    form.add_error(key if key in fields else None, messages)
                return name, form
        form = self.form("summary", bound=True)
        form.is_valid()
        for messages in errors.values():
            form.add_error(None, messages)
        return "summary", form

    # --- rendering ------------------------------------------------------------------------------

    def carried(self, current: str) -> list[tuple[str, str]]:
        """Hidden inputs that carry the other steps' values through this step's form."""
        own = next(step.fields for step in STEPS if step.name == current)
        return [
            (key, value)
            for key in STATE_FIELDS
            if key not in own
            for value in self.data.getlist(key)
            if value
        ]

    def link(self, step: str) -> str:
        query = QueryDict(mutable=True)
        for key in STATE_FIELDS:
            for value in self.data.getlist(key):
                if value:
                    query.appendlist(key, value)
        query["step"] = step
        return "?" + query.urlencode()


def _disk_label(disk: Any) -> str:
    size = binary_bytes(disk.capacity_bytes)
    return (
        f"{disk.device_key} ({size})"
        if not disk.label
        else f"{disk.label} — {disk.device_key} ({size})"
    )


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
