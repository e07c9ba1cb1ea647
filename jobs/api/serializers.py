from __future__ import annotations

from typing import Any

from rest_framework import serializers

from inventory.models import VirtualMachine
from jobs.models import JobRun, ProtectionPolicy, RunLog, RunTask, Schedule, SelectionRule
from storage.models import Repository

_MISSING_REPOSITORY: dict[str, Any] = {"does_not_exist": "Repository {pk_value} does not exist."}
_MISSING_VM: dict[str, Any] = {"does_not_exist": "Virtual machine {pk_value} does not exist."}


class SelectionRuleSerializer(serializers.ModelSerializer):
    class Meta:
        model = SelectionRule
        fields = ["kind", "value", "exclude"]


class ScheduleSerializer(serializers.ModelSerializer):
    class Meta:
        model = Schedule
        fields = ["id", "cron", "timezone", "enabled", "last_fired_at"]
        read_only_fields = ["last_fired_at"]


class ProtectionPolicySerializer(serializers.ModelSerializer):
    repository = serializers.PrimaryKeyRelatedField(
        queryset=Repository.objects.all(), error_messages=_MISSING_REPOSITORY
    )
    copy_repository = serializers.PrimaryKeyRelatedField(
        queryset=Repository.objects.all(),
        allow_null=True,
        required=False,
        error_messages=_MISSING_REPOSITORY,
    )
    vms = serializers.PrimaryKeyRelatedField(
        queryset=VirtualMachine.objects.all(),
        many=True,
        required=False,
        error_messages=_MISSING_VM,
    )
    excluded_vms = serializers.PrimaryKeyRelatedField(
        queryset=VirtualMachine.objects.all(),
        many=True,
        required=False,
        error_messages=_MISSING_VM,
    )
    rules = SelectionRuleSerializer(many=True, required=False)
    schedules = ScheduleSerializer(many=True, required=False)
    members: serializers.PrimaryKeyRelatedField = serializers.PrimaryKeyRelatedField(
        many=True, read_only=True
    )

    class Meta:
        model = ProtectionPolicy
        fields = [
            "id",
            "name",
            "description",
            "enabled",
            "vms",
            "excluded_vms",
            "rules",
            "members",
            "schedules",
            "repository",
            "copy_repository",
            "keep_last",
            "keep_daily",
            "keep_weekly",
            "keep_monthly",
            "keep_yearly",
            "rpo_hours",
            "options",
            "created_at",
            "updated_at",
        ]


class PrunePreviewSerializer(serializers.Serializer):
    vm_key = serializers.CharField()
    point_id = serializers.CharField()
    time = serializers.DateTimeField()
    mark = serializers.ChoiceField(choices=["keep", "remove", "protected", "immutable", "in-use"])
    reasons = serializers.ListField(child=serializers.CharField())


class RunPolicySerializer(serializers.Serializer):
    """Empty body: starting a run takes no options yet."""


class RunTaskSerializer(serializers.ModelSerializer):
    class Meta:
        model = RunTask
        fields = [
            "id",
            "run",
            "parent",
            "kind",
            "phase",
            "name",
            "vm",
            "disk",
            "state",
            "message",
            "position",
            "started_at",
            "finished_at",
            "bytes_done",
            "bytes_total",
            "rate_bps",
            "eta_seconds",
            "busy_source",
            "busy_proxy",
            "busy_repository",
            "bottleneck",
        ]


class RunLogSerializer(serializers.ModelSerializer):
    class Meta:
        model = RunLog
        fields = ["id", "run", "task", "time", "level", "message"]


class JobRunSerializer(serializers.ModelSerializer):
    class Meta:
        model = JobRun
        fields = [
            "id",
            "kind",
            "policy",
            "trigger",
            "requested_by",
            "proxy",
            "repository",
            "options",
            "state",
            "result",
            "reason",
            "cancel_requested",
            "created_at",
            "started_at",
            "finished_at",
            "bytes_done",
            "bytes_total",
            "rate_bps",
            "eta_seconds",
        ]
