"""The policy form: Django forms parse and render the inputs; the API's serializer and the jobs
services decide what is valid, and their errors are put next to the fields they name."""

from __future__ import annotations

from typing import Any

from django import forms
from django.db.models import QuerySet
from django.forms import BaseFormSet, formset_factory

from frontend.forms import ConsoleForm
from inventory.choices import Transport
from inventory.models import VirtualMachine
from jobs.choices import RuleKind
from jobs.models import ProtectionPolicy, SelectionRule
from jobs.options import OPTION_KEYS
from storage.choices import Consistency
from storage.models import Repository

RETENTION_FIELDS = ("keep_last", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")

# Simple schedules; the value is the cron expression itself, so a saved schedule whose cron is one
# of these shows up as that preset again.
PRESETS = (
    ("0 * * * *", "Every hour"),
    ("0 22 * * *", "Daily at 22:00"),
    ("0 22 * * 1-5", "Weekdays at 22:00"),
    ("0 22 * * 6", "Weekly, Saturday at 22:00"),
    ("0 22 1 * *", "Monthly, on the 1st at 22:00"),
)
DEFAULT_PRESET = "0 22 * * *"


class PolicyForm(ConsoleForm):
    name = forms.CharField(required=False)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    enabled = forms.BooleanField(required=False, initial=True, label="Enabled (runs on schedule)")
    repository = forms.ModelChoiceField(
        queryset=Repository.objects.none(), required=False, empty_label="Choose a repository"
    )
    vms = forms.ModelMultipleChoiceField(
        queryset=VirtualMachine.objects.none(),
        required=False,
        label="Virtual machines (explicit)",
        widget=forms.SelectMultiple(attrs={"size": 6}),
    )
    excluded_vms = forms.ModelMultipleChoiceField(
        queryset=VirtualMachine.objects.none(),
        required=False,
        label="Always exclude",
        widget=forms.SelectMultiple(attrs={"size": 4}),
    )
    keep_last = forms.IntegerField(required=False, label="Keep last", initial=7)
    keep_daily = forms.IntegerField(required=False, label="Daily", initial=0)
    keep_weekly = forms.IntegerField(required=False, label="Weekly", initial=0)
    keep_monthly = forms.IntegerField(required=False, label="Monthly", initial=0)
    keep_yearly = forms.IntegerField(required=False, label="Yearly", initial=0)
    rpo_hours = forms.IntegerField(
        required=False,
        label="Recovery point objective (hours)",
        initial=24,
        help_text=ProtectionPolicy._meta.get_field("rpo_hours").help_text,
    )
    consistency = forms.ChoiceField(
        required=False,
        choices=[("", "Default"), *Consistency.choices],
        help_text="Application-consistent quiesces the guest through its agent; without one, "
        "the point is crash-consistent and the run says why.",
    )
    transport_order = forms.CharField(
        required=False,
        label="Transport preference",
        help_text="In order of preference, separated by commas, from: "
        f"{', '.join(Transport.values)}. Empty: the default order.",
    )
    max_parallel_vms = forms.IntegerField(required=False, label="VMs at once")
    bandwidth_limit_mbps = forms.IntegerField(required=False, label="Bandwidth limit (Mbit/s)")
    copy_repository = forms.ModelChoiceField(
        queryset=Repository.objects.none(),
        required=False,
        label="Secondary copy to",
        empty_label="No secondary copy",
        help_text=ProtectionPolicy._meta.get_field("copy_repository").help_text,
    )

    def __init__(
        self,
        *args: Any,
        repositories: QuerySet[Repository],
        vms: QuerySet[VirtualMachine],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        fields: dict[str, Any] = self.fields
        fields["repository"].queryset = repositories
        fields["copy_repository"].queryset = repositories
        labelled = vms.select_related("connection").order_by("name", "pk")
        for name in ("vms", "excluded_vms"):
            fields[name].queryset = labelled
            fields[name].label_from_instance = lambda vm: f"{vm.name} ({vm.connection.name})"

    def options(self) -> dict[str, Any]:
        """The options the user set (blank ones fall back to the defaults)."""
        data = self.cleaned_data
        options: dict[str, Any] = {}
        if data.get("consistency"):
            options["consistency"] = data["consistency"]
        order = [t for t in (data.get("transport_order") or "").replace(",", " ").split() if t]
        if order:
            options["transport_order"] = order
        for name in ("max_parallel_vms", "bandwidth_limit_mbps"):
            if data.get(name) is not None:
                options[name] = data[name]
        return options

    @staticmethod
    def initial_for(policy: ProtectionPolicy) -> dict[str, Any]:
        options = policy.options or {}
        return {
            "name": policy.name,
            "description": policy.description,
            "enabled": policy.enabled,
            "repository": policy.repository_id,
            "copy_repository": policy.copy_repository_id,
            "vms": [vm.pk for vm in policy.vms.all()],
            "excluded_vms": [vm.pk for vm in policy.excluded_vms.all()],
            "rpo_hours": policy.rpo_hours,
            **{name: getattr(policy, name) for name in RETENTION_FIELDS},
            "consistency": options.get("consistency", ""),
            "transport_order": ", ".join(options.get("transport_order") or []),
            "max_parallel_vms": options.get("max_parallel_vms"),
            "bandwidth_limit_mbps": options.get("bandwidth_limit_mbps"),
        }


OPTION_FIELDS = tuple(name for name in OPTION_KEYS if name in PolicyForm.base_fields)


class RuleForm(ConsoleForm):
    kind = forms.ChoiceField(choices=RuleKind.choices, initial=RuleKind.TAG, label="Match by")
    value = forms.CharField(
        required=False,
        label="Value",
        help_text=SelectionRule._meta.get_field("value").help_text,
    )
    exclude = forms.BooleanField(required=False, label="Exclude matches")

    def rule(self) -> SelectionRule | None:
        """The rule as an unsaved row, for the live preview (None while incomplete)."""
        if not self.is_valid() or not self.cleaned_data.get("value"):
            return None
        if self.cleaned_data.get("DELETE"):
            return None
        return SelectionRule(
            kind=self.cleaned_data["kind"],
            value=self.cleaned_data["value"],
            exclude=self.cleaned_data["exclude"],
        )


class ScheduleForm(ConsoleForm):
    preset = forms.ChoiceField(
        required=False, choices=[("", "Custom (cron)"), *PRESETS], label="Runs"
    )
    cron = forms.CharField(
        required=False,
        label="Cron expression",
        help_text="Used when “Runs” is Custom: minute hour day-of-month month day-of-week.",
    )
    timezone = forms.CharField(required=False, label="Time zone")
    enabled = forms.BooleanField(required=False, initial=True, label="Active")

    def __init__(self, *args: Any, default_timezone: str = "UTC", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["timezone"].initial = default_timezone
        self.fields["timezone"].widget.attrs["list"] = "timezone-names"
        self.fields["cron"].widget.attrs["placeholder"] = "custom, e.g. 30 1 * * 1-5"

    def effective(self) -> dict[str, Any] | None:
        """The schedule this row describes, or None when the row is removed or unparseable."""
        if not self.is_valid() or not self.cleaned_data or self.cleaned_data.get("DELETE"):
            return None
        data = self.cleaned_data
        return {
            "cron": data["preset"] or data["cron"].strip(),
            "timezone": data["timezone"].strip(),
            "enabled": data["enabled"],
        }

    @staticmethod
    def initial_for(cron: str, tz: str, enabled: bool) -> dict[str, Any]:
        preset = cron if cron in dict(PRESETS) else ""
        return {
            "preset": preset,
            "cron": "" if preset else cron,
            "timezone": tz,
            "enabled": enabled,
        }


RuleFormSet: type[BaseFormSet[RuleForm]] = formset_factory(RuleForm, extra=1, can_delete=True)
ScheduleFormSet: type[BaseFormSet[ScheduleForm]] = formset_factory(
    ScheduleForm, extra=0, can_delete=True
)
