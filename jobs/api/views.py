from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from backupconsole.api.viewsets import ReadOnlyViewSet, ServiceModelViewSet
from jobs import services
from jobs.api.serializers import (
    JobRunSerializer,
    ProtectionPolicySerializer,
    PrunePreviewSerializer,
    RunLogSerializer,
    RunPolicySerializer,
    RunTaskSerializer,
)
from jobs.choices import Trigger
from jobs.filtersets import (
    JobRunFilterSet,
    ProtectionPolicyFilterSet,
    RunLogFilterSet,
    RunTaskFilterSet,
)
from jobs.models import JobRun, ProtectionPolicy, RunLog, RunTask


def _split(data: dict[str, Any]) -> dict[str, Any]:
    """Separate the policy's own fields from its selection and schedules."""
    return {name: data.pop(name, None) for name in ("vms", "excluded_vms", "rules", "schedules")}


class ProtectionPolicyViewSet(ServiceModelViewSet):
    queryset = ProtectionPolicy.objects.prefetch_related(
        "vms", "excluded_vms", "rules", "schedules", "members"
    )
    serializer_class = ProtectionPolicySerializer
    filterset_class = ProtectionPolicyFilterSet
    ordering_fields = ["name", "created_at"]
    extra_actions = {"run": "run"}

    def service_create(self, data: dict[str, Any]) -> ProtectionPolicy:
        parts = _split(data)
        return services.create_policy(
            data=data,
            vms=parts["vms"] or [],
            excluded_vms=parts["excluded_vms"] or [],
            rules=parts["rules"] or [],
            schedules=parts["schedules"] or [],
            acting_user=self.request.user,
        )

    def service_update(self, instance: ProtectionPolicy, data: dict[str, Any]) -> ProtectionPolicy:
        parts = _split(data)
        return services.update_policy(instance, data=data, **parts, acting_user=self.request.user)

    def service_delete(self, instance: ProtectionPolicy) -> None:
        services.delete_policy(instance, acting_user=self.request.user)

    @extend_schema(responses=PrunePreviewSerializer(many=True))
    @action(detail=True, methods=["get"], url_path="prune-preview")
    def prune_preview(self, request: Request, pk: str | None = None) -> Response:
        """Which restore points the policy's retention keeps and removes, and why."""
        from storage.retention import preview

        rows = [
            {
                "vm_key": vm_key,
                "point_id": d.point.id,
                "time": d.point.time,
                "mark": d.mark,
                "reasons": list(d.reasons),
            }
            for vm_key, decisions in preview(self.get_object()).items()
            for d in decisions
        ]
        return Response(PrunePreviewSerializer(rows, many=True).data)

    @extend_schema(request=RunPolicySerializer, responses={202: JobRunSerializer})
    @action(detail=True, methods=["post"])
    def run(self, request: Request, pk: str | None = None) -> Response:
        """Start a backup run of this policy now."""
        run = services.start_run(self.get_object(), trigger=Trigger.API, acting_user=request.user)
        return Response(JobRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class JobRunViewSet(ReadOnlyViewSet):
    queryset = JobRun.objects.select_related("policy", "proxy")
    serializer_class = JobRunSerializer
    filterset_class = JobRunFilterSet
    ordering_fields = ["created_at", "started_at", "finished_at", "state"]
    extra_actions = {"cancel": "run"}

    @extend_schema(request=None, responses=JobRunSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        """Stop the run; snapshots it made are cleaned up."""
        run = services.cancel_run(self.get_object(), acting_user=request.user)
        return Response(JobRunSerializer(run).data)


class RunTaskViewSet(ReadOnlyViewSet):
    queryset = RunTask.objects.all()
    serializer_class = RunTaskSerializer
    filterset_class = RunTaskFilterSet
    ordering_fields = ["position", "started_at"]


class RunLogViewSet(ReadOnlyViewSet):
    queryset = RunLog.objects.all()
    serializer_class = RunLogSerializer
    filterset_class = RunLogFilterSet
    ordering_fields = ["time", "level"]
