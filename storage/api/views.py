from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from backupconsole.api.viewsets import ReadOnlyViewSet, ServiceModelViewSet
from storage import services
from storage.api.serializers import (
    ProtectSerializer,
    RepositorySerializer,
    RestorePointDiskSerializer,
    RestorePointSerializer,
)
from storage.filtersets import (
    RepositoryFilterSet,
    RestorePointDiskFilterSet,
    RestorePointFilterSet,
)
from storage.models import Repository, RestorePoint, RestorePointDisk


class RepositoryViewSet(ServiceModelViewSet):
    queryset = Repository.objects.all()
    serializer_class = RepositorySerializer
    filterset_class = RepositoryFilterSet
    ordering_fields = ["name", "used_bytes", "created_at"]

    def service_create(self, data: dict[str, Any]) -> Repository:
        secret = data.pop("secret", "")
        return services.create_repository(data=data, secret=secret, acting_user=self.request.user)

    def service_update(self, instance: Repository, data: dict[str, Any]) -> Repository:
        secret = data.pop("secret", None)
        return services.update_repository(
            instance, data=data, secret=secret, acting_user=self.request.user
        )

    def service_delete(self, instance: Repository) -> None:
        services.delete_repository(instance, acting_user=self.request.user)


class RestorePointViewSet(ReadOnlyViewSet):
    queryset = RestorePoint.objects.select_related("vm", "repository").prefetch_related("disks")
    serializer_class = RestorePointSerializer
    filterset_class = RestorePointFilterSet
    ordering_fields = ["created_at", "logical_bytes", "stored_bytes"]
    extra_actions = {"protect": "restore"}

    @extend_schema(request=ProtectSerializer, responses=RestorePointSerializer)
    @action(detail=True, methods=["post"])
    def protect(self, request: Request, pk: str | None = None) -> Response:
        """Protect a restore point from retention, or lift the protection."""
        body = ProtectSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        point = services.set_restore_point_protected(
            self.get_object(), protected=body.validated_data["protected"], acting_user=request.user
        )
        return Response(RestorePointSerializer(point).data)


class RestorePointDiskViewSet(ReadOnlyViewSet):
    queryset = RestorePointDisk.objects.all()
    serializer_class = RestorePointDiskSerializer
    filterset_class = RestorePointDiskFilterSet
    ordering_fields = ["device_key"]
