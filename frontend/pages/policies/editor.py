"""One policy form with its rule and schedule rows: binds them, saves through the API's serializer
and the jobs services (their errors land next to the fields), and computes the live previews."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.forms import Form
from django.http import QueryDict
from django.utils import timezone

from backupconsole.errors import ActionRefused
from frontend.pages.policies.forms import (
    DEFAULT_PRESET,
    OPTION_FIELDS,
    RETENTION_FIELDS,
    PolicyForm,
    RuleFormSet,
    ScheduleForm,
    ScheduleFormSet,
)
from inventory.models import VirtualMachine
from jobs import services
from jobs.api.serializers import ProtectionPolicySerializer
from jobs.models import ProtectionPolicy
from jobs.schedules import next_fire, validate_cron, validate_timezone
from jobs.selection import resolve
from storage.engine.prune import Decision, RetentionPolicy
from storage.engine_access import vm_key_for
from storage.models import Repository, RestorePoint
from storage.retention import preview_points

CHILDREN = ("vms", "excluded_vms", "rules", "schedules")
PREVIEW_LIMIT = 50  # VMs listed by the selection preview; the count is always exact


@dataclass
class SchedulePreview:
    cron: str
    timezone: str
    enabled: bool
    times: list[datetime] = field(default_factory=list)
    error: str = ""


@dataclass
class RetentionGroup:
    vm_key: str
    vm_name: str
    decisions: list[Decision]

    @property
    def removed(self) -> int:
        return sum(1 for d in self.decisions if not d.reasons)


@dataclass
class RetentionPreview:
    groups: list[RetentionGroup] = field(default_factory=list)
    error: str = ""
    timezone: str = "UTC"

    @property
    def kept(self) -> int:
        return sum(len(g.decisions) - g.removed for g in self.groups)

    @property
    def removed(self) -> int:
        return sum(g.removed for g in self.groups)


class PolicyEditor:
    def __init__(
        self, user: Any, *, policy: ProtectionPolicy | None = None, data: QueryDict | None = None
    ) -> None:
        self.user = user
        self.policy = policy
        self.rule_errors: list[str] = []
        self.schedule_errors: list[str] = []
        zone = timezone.get_current_timezone_name()
        initial: dict[str, Any] = {}
        rules: list[dict[str, Any]] = []
        schedules = [ScheduleForm.initial_for(DEFAULT_PRESET, zone, True)]
        if policy is not None:
            initial = PolicyForm.initial_for(policy)
            rules = [
                {"kind": r.kind, "value": r.value, "exclude": r.exclude} for r in policy.rules.all()
            ]
            schedules = [
                ScheduleForm.initial_for(s.cron, s.timezone, s.enabled)
                for s in policy.schedules.all()
            ]
        self.form = PolicyForm(
            data,
            initial=initial,
            repositories=Repository.objects.restrict(user, "view"),
            vms=VirtualMachine.objects.restrict(user, "view"),
        )
        self.rules = RuleFormSet(data, prefix="rules", initial=None if data else rules)
        self.schedules = ScheduleFormSet(
            data,
            prefix="schedules",
            initial=None if data else schedules,
            form_kwargs={"default_timezone": zone},
        )

    # --- adding rows (a submit button, so it works without JavaScript) --------------------------

    def with_row(self, which: str) -> PolicyEditor:
        """An unbound copy showing what was typed, plus one more rule or schedule row."""
        copy = PolicyEditor(self.user, policy=self.policy)
        values = {name: bound.value() for name, bound in _fields(self.form)}
        copy.form = PolicyForm(
            initial=values,
            repositories=Repository.objects.restrict(self.user, "view"),
            vms=VirtualMachine.objects.restrict(self.user, "view"),
        )
        rules = [_values(f) for f in self.rules.forms if _kept(f)]
        schedules = [_values(f) for f in self.schedules.forms if _kept(f)]
        if which == "schedule":
            zone = timezone.get_current_timezone_name()
            schedules.append(ScheduleForm.initial_for(DEFAULT_PRESET, zone, True))
        copy.rules = RuleFormSet(prefix="rules", initial=rules)
        copy.schedules = ScheduleFormSet(
            prefix="schedules",
            initial=schedules,
            form_kwargs={"default_timezone": timezone.get_current_timezone_name()},
        )
        return copy

    # --- saving ---------------------------------------------------------------------------------

    def save(self) -> ProtectionPolicy | None:
        parsed = [self.form.is_valid(), self.rules.is_valid(), self.schedules.is_valid()]
        if not all(parsed):
            return None
        rule_rows = [(f, _rule_payload(f)) for f in self.rules.forms if _counts(f)]
        schedule_rows = [(f, f.effective()) for f in self.schedules.forms if _counts(f)]
        serializer = ProtectionPolicySerializer(
            instance=self.policy,
            data=self._payload([p for _, p in rule_rows], [p for _, p in schedule_rows]),
        )
        if not serializer.is_valid():
            for key, value in serializer.errors.items():
                if key == "rules":
                    _row_errors([f for f, _ in rule_rows], value, self.rule_errors)
                elif key == "schedules":
                    _row_errors([f for f, _ in schedule_rows], value, self.schedule_errors)
                elif key == "options":
                    for message in value:
                        self.form.add_error(_option_field(str(message)), str(message))
                else:
                    self.form.add_error(key if key in self.form.fields else None, value)
            return None
        data = dict(serializer.validated_data)
        parts = {name: data.pop(name, None) or [] for name in CHILDREN}
        try:
            if self.policy is None:
                return services.create_policy(data=data, **parts, acting_user=self.user)
            return services.update_policy(self.policy, data=data, **parts, acting_user=self.user)
        except ActionRefused as exc:
            self.form.add_error(exc.field if exc.field in self.form.fields else None, exc.message)
            return None

    def _payload(
        self, rules: list[dict[str, Any]], schedules: list[dict[str, Any] | None]
    ) -> dict[str, Any]:
        data = self.form.cleaned_data
        payload: dict[str, Any] = {
            "name": data["name"],
            "description": data["description"],
            "enabled": data["enabled"],
            "copy_repository": data["copy_repository"].pk if data["copy_repository"] else None,
            "vms": [vm.pk for vm in data["vms"]],
            "excluded_vms": [vm.pk for vm in data["excluded_vms"]],
            "rules": rules,
            "schedules": schedules,
            "options": self.form.options(),
            # A blank count means "not used".
            **{name: data[name] or 0 for name in RETENTION_FIELDS},
        }
        if data["repository"] is not None:
            payload["repository"] = data["repository"].pk
        if data["rpo_hours"] is not None:
            payload["rpo_hours"] = data["rpo_hours"]
        return payload

    # --- previews -------------------------------------------------------------------------------

    def selection(self) -> QuerySet[VirtualMachine]:
        """The VMs the selection as typed matches now (all of them, for the retention preview)."""
        self.form.is_valid()
        data = self.form.cleaned_data
        rules = [rule for f in self.rules.forms if (rule := f.rule()) is not None]
        return resolve(
            vms=data.get("vms") or [], excluded_vms=data.get("excluded_vms") or [], rules=rules
        )

    def visible_selection(self) -> tuple[list[VirtualMachine], int, int]:
        """(first VMs the user may see, how many the user may see, how many match in all)."""
        matched = self.selection()
        visible = matched.filter(pk__in=VirtualMachine.objects.restrict(self.user, "view"))
        rows = list(visible.select_related("connection", "host")[:PREVIEW_LIMIT])
        return rows, visible.count(), matched.count()

    def schedule_previews(self, *, now: datetime | None = None) -> list[SchedulePreview]:
        now = now or timezone.now()
        previews = []
        for form in self.schedules.forms:
            row = form.effective()
            if row is None:
                continue
            preview = SchedulePreview(row["cron"], row["timezone"], row["enabled"])
            try:
                validate_cron(row["cron"])
                validate_timezone(row["timezone"])
            except ValidationError as exc:
                preview.error = " ".join(exc.messages)
            else:
                after = now
                for _ in range(3):
                    after = next_fire(row["cron"], row["timezone"], after)
                    preview.times.append(after)
            previews.append(preview)
        return previews

    def retention_preview(self, *, now: datetime | None = None) -> RetentionPreview:
        self.form.is_valid()
        data = self.form.cleaned_data
        counts = {name: data.get(name) or 0 for name in RETENTION_FIELDS}
        result = RetentionPreview(timezone=self._retention_timezone())
        try:
            services.check_retention(counts)
            rules = RetentionPolicy(**counts, timezone=result.timezone)
        except ActionRefused as exc:
            result.error = exc.message
            return result
        except ValueError as exc:
            result.error = str(exc)
            return result
        repository = data.get("repository")
        if repository is None:
            result.error = "Choose a repository to see which of its restore points are kept."
            return result
        names = {vm_key_for(vm): vm.name for vm in self.selection().select_related("connection")}
        rows = RestorePoint.objects.restrict(self.user, "view").filter(
            repository=repository, vm_key__in=list(names)
        )
        result.groups = [
            RetentionGroup(key, names[key], decisions)
            for key, decisions in preview_points(rows, rules, now=now).items()
        ]
        return result

    def _retention_timezone(self) -> str:
        """Retention counts days in the first schedule's zone (as storage.retention does)."""
        for form in self.schedules.forms:
            row = form.effective()
            if row is not None:
                try:
                    validate_timezone(row["timezone"])
                except ValidationError:
                    return "UTC"
                return str(row["timezone"])
        return "UTC"

    # --- rendering ------------------------------------------------------------------------------

    def context(self) -> dict[str, Any]:
        self.form.render_ready()  # type: ignore[attr-defined]
        for form in [*self.rules.forms, *self.schedules.forms]:
            form.render_ready()  # type: ignore[attr-defined]
        return {
            "form": self.form,
            "rules": self.rules,
            "schedules": self.schedules,
            "rule_errors": self.rule_errors + list(self.rules.non_form_errors()),
            "schedule_errors": self.schedule_errors + list(self.schedules.non_form_errors()),
            "option_fields": [self.form[name] for name in OPTION_FIELDS],
            "retention_fields": [self.form[name] for name in RETENTION_FIELDS],
        }


def _fields(form: Form) -> list[tuple[str, Any]]:
    return [(name, form[name]) for name in form.fields]


def _values(form: Form) -> dict[str, Any]:
    return {name: bound.value() for name, bound in _fields(form) if name != "DELETE"}


def _kept(form: Form) -> bool:
    """A row worth showing again: not removed, and not an untouched blank extra row."""
    if form["DELETE"].value():
        return False
    return form.empty_permitted is False or form.has_changed()


def _counts(form: Any) -> bool:
    """A row that is part of the policy: parsed, not removed, and not an untouched extra."""
    return bool(form.is_valid() and form.cleaned_data and not form.cleaned_data.get("DELETE"))


def _rule_payload(form: Any) -> dict[str, Any]:
    data = form.cleaned_data
    return {"kind": data["kind"], "value": data["value"], "exclude": data["exclude"]}


def _row_errors(forms: list[Any], errors: Any, sink: list[str]) -> None:
    """Serializer errors of a nested list: per row (a list of dicts, or a dict by row index in
    newer DRF), or messages about the list itself."""
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        errors = dict(enumerate(errors))
    if isinstance(errors, dict) and all(isinstance(key, int) for key in errors):
        for index, row in errors.items():
            for name, messages in row.items():
                form = forms[index]
                form.add_error(name if name in form.fields else None, messages)
        return
    if isinstance(errors, dict):
        errors = [m for messages in errors.values() for m in messages]
    sink.extend(str(m) for m in errors)


def _option_field(message: str) -> str | None:
    """validate_options names the option each message is about at its start."""
    return next((name for name in OPTION_FIELDS if message.startswith(name)), None)
