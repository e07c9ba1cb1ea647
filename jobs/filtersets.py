"""FilterSets shared by the console's lists and the API."""

import django_filters as filters

from jobs.choices import LogLevel, RunKind, RunResult, RunState, TaskKind, TaskState, Trigger
from jobs.models import JobRun, ProtectionPolicy, RunLog, RunTask


class ProtectionPolicyFilterSet(filters.FilterSet):
    name = filters.CharFilter(lookup_expr="icontains")

    class Meta:
        model = ProtectionPolicy
        fields = ["enabled", "repository"]


class JobRunFilterSet(filters.FilterSet):
    kind = filters.MultipleChoiceFilter(choices=RunKind.choices)
    state = filters.MultipleChoiceFilter(choices=RunState.choices)
    result = filters.MultipleChoiceFilter(choices=RunResult.choices)
    trigger = filters.MultipleChoiceFilter(choices=Trigger.choices)
    created_after = filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")
    vm = filters.NumberFilter(field_name="tasks__vm", distinct=True, label="Includes VM")

    class Meta:
        model = JobRun
        fields = ["policy", "proxy", "requested_by"]


class RunTaskFilterSet(filters.FilterSet):
    kind = filters.MultipleChoiceFilter(choices=TaskKind.choices)
    state = filters.MultipleChoiceFilter(choices=TaskState.choices)

    class Meta:
        model = RunTask
        fields = ["run", "parent", "vm", "disk"]


class RunLogFilterSet(filters.FilterSet):
    min_level = filters.ChoiceFilter(
        field_name="level", lookup_expr="gte", choices=LogLevel.choices
    )

    class Meta:
        model = RunLog
        fields = ["run", "task"]
