from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from backupconsole.api.viewsets import ReadOnlyViewSet, ServiceModelViewSet
from backupconsole.errors import ActionRefused
from jobs.api.serializers import JobRunSerializer
from jobs.choices import RunKind
from storage import services
from storage.api.serializers import (
    CopyRequestSerializer,
    ProtectSerializer,
    PruneRequestSerializer,
    RepositorySerializer,
    RestorePointDiskSerializer,
    RestorePointSerializer,
    RestoreRequestSerializer,
    VerifyRequestSerializer,
)
from storage.filtersets import (
    RepositoryFilterSet,
    RestorePointDiskFilterSet,
    RestorePointFilterSet,
)
from storage.models import Repository, RestorePoint, RestorePointDisk
from storage.usage import with_usage


def _accepted(run: Any) -> Response:
    return Response(JobRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class RepositoryViewSet(ServiceModelViewSet):
    queryset = Repository.objects.all()
    serializer_class = RepositorySerializer
    filterset_class = RepositoryFilterSet
    ordering_fields = ["name", "used_bytes", "created_at"]
    extra_actions = {"verify": "run", "gc": "run", "prune": "run", "copy": "run"}

    def get_queryset(self) -> Any:
        return with_usage(super().get_queryset())  # restricted first, as in the console

    def service_create(self, data: dict[str, Any]) -> Repository:
        secret = data.pop("secret", "")
        passphrase = data.pop("passphrase", "")
        return services.create_repository(
            data=data, secret=secret, passphrase=passphrase, acting_user=self.request.user
        )

    def service_update(self, instance: Repository, data: dict[str, Any]) -> Repository:
        secret = data.pop("secret", None)
        passphrase = data.pop("passphrase", None)
        return services.update_repository(
            instance,
            data=data,
            secret=secret,
            passphrase=passphrase,
            acting_user=self.request.user,
        )

    def service_delete(self, instance: Repository) -> None:
        services.delete_repository(instance, acting_user=self.request.user)

    def _job(self, request: Request, kind: str, options: dict[str, Any]) -> Response:
        run = services.start_repository_job(
            self.get_object(), kind=kind, options=options, acting_user=request.user
        )
        return _accepted(run)

    @extend_schema(request=VerifyRequestSerializer, responses={202: JobRunSerializer})
    @action(detail=True, methods=["post"])
    def verify(self, request: Request, pk: str | None = None) -> Response:
        """Verify every restore point of the repository, as a run."""
        body = VerifyRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        return self._job(request, RunKind.VERIFY, {"deep": body.validated_data["deep"]})

    @extend_schema(request=None, responses={202: JobRunSerializer})
    @action(detail=True, methods=["post"])
    def gc(self, request: Request, pk: str | None = None) -> Response:
        """Remove data no restore point references any more, as a run."""
        return self._job(request, RunKind.GC, {})

    @extend_schema(request=PruneRequestSerializer, responses={202: JobRunSerializer})
    @action(detail=True, methods=["post"])
    def prune(self, request: Request, pk: str | None = None) -> Response:
        """Apply the policies' retention to their restore points, as a run."""
        body = PruneRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        return self._job(request, RunKind.PRUNE, dict(body.validated_data))

    @extend_schema(request=CopyRequestSerializer, responses={202: JobRunSerializer})
    @action(detail=True, methods=["post"])
    def copy(self, request: Request, pk: str | None = None) -> Response:
        """Copy restore points to another repository (secondary copy), as a run."""
        body = CopyRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        target = body.validated_data["target"]
        if target.pk == self.get_object().pk:
            raise ActionRefused("Copy to another repository.", field="target")
        options: dict[str, Any] = {"target": target.pk}
        if "restore_point" in body.validated_data:
            options["restore_point"] = body.validated_data["restore_point"]
        return self._job(request, RunKind.COPY, options)


class RestorePointViewSet(mixins.DestroyModelMixin, ReadOnlyViewSet):
    queryset = RestorePoint.objects.select_related("vm", "repository").prefetch_related("disks")
    serializer_class = RestorePointSerializer
    filterset_class = RestorePointFilterSet
    ordering_fields = ["created_at", "logical_bytes", "stored_bytes"]
    extra_actions = {"protect": "restore", "verify": "run", "restore": "restore"}

    def perform_destroy(self, instance: RestorePoint) -> None:
        services.delete_restore_point(instance, acting_user=self.request.user)

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

    @extend_schema(request=RestoreRequestSerializer, responses={202: JobRunSerializer})
    @action(detail=True, methods=["post"])
    def restore(self, request: Request, pk: str | None = None) -> Response:
        """Restore a disk to a file or a vSphere datastore, or the whole VM as a new VM on a
        KVM host or vCenter/ESXi (never over an existing one), as a run."""
        body = RestoreRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        run = services.start_restore(
            self.get_object(), options=dict(body.validated_data), acting_user=request.user
        )
        return _accepted(run)

    @extend_schema(request=VerifyRequestSerializer, responses={202: JobRunSerializer})
    @action(detail=True, methods=["post"])
    def verify(self, request: Request, pk: str | None = None) -> Response:
        """Verify this restore point, as a run."""
        body = VerifyRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        point = self.get_object()
        run = services.start_repository_job(
            point.repository,
            kind=RunKind.VERIFY,
            options={"deep": body.validated_data["deep"], "restore_point": point.pk},
            acting_user=request.user,
        )
        return _accepted(run)


class RestorePointDiskViewSet(ReadOnlyViewSet):
    queryset = RestorePointDisk.objects.all()
    serializer_class = RestorePointDiskSerializer
    filterset_class = RestorePointDiskFilterSet
    ordering_fields = ["device_key"]
