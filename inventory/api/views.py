from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from backupconsole.api.viewsets import ReadOnlyViewSet, ServiceModelViewSet
from inventory import services
from inventory.api.serializers import (
    ConnectionSerializer,
    ConnectionTestSerializer,
    InventoryObjectSerializer,
    ProxySerializer,
    ResetCBTResultSerializer,
    ResetCBTSerializer,
    TagSerializer,
    VirtualDiskSerializer,
    VirtualMachineSerializer,
    VMBackupSerializer,
)
from inventory.filtersets import (
    ConnectionFilterSet,
    InventoryObjectFilterSet,
    ProxyFilterSet,
    TagFilterSet,
    VirtualDiskFilterSet,
    VirtualMachineFilterSet,
)
from inventory.models import Connection, InventoryObject, Proxy, Tag, VirtualDisk, VirtualMachine
from jobs.api.serializers import JobRunSerializer
from jobs.choices import Trigger
from jobs.services import start_vm_backup


class ConnectionViewSet(ServiceModelViewSet):
    queryset = Connection.objects.all()
    serializer_class = ConnectionSerializer
    filterset_class = ConnectionFilterSet
    ordering_fields = ["name", "kind", "address", "last_tested_at"]
    extra_actions = {"test": "change", "sync": "change"}

    def service_create(self, data: dict[str, Any]) -> Connection:
        skip_test = data.pop("skip_test", False)
        secret = data.pop("secret", "")
        return services.create_connection(
            data=data, secret=secret, acting_user=self.request.user, test=not skip_test
        )

    def service_update(self, instance: Connection, data: dict[str, Any]) -> Connection:
        skip_test = data.pop("skip_test", False)
        secret = data.pop("secret", None)
        return services.update_connection(
            instance, data=data, secret=secret, acting_user=self.request.user, test=not skip_test
        )

    def service_delete(self, instance: Connection) -> None:
        services.delete_connection(instance, acting_user=self.request.user)

    @extend_schema(request=None, responses=ConnectionTestSerializer)
    @action(detail=True, methods=["post"])
    def test(self, request: Request, pk: str | None = None) -> Response:
        """Check that the endpoint answers and presents the expected certificate."""
        result = services.test_connection(self.get_object(), acting_user=request.user)
        return Response(ConnectionTestSerializer(result).data)

    @extend_schema(request=None, responses={202: None})
    @action(detail=True, methods=["post"])
    def sync(self, request: Request, pk: str | None = None) -> Response:
        """Queue an inventory sync of this connection (its VMs, disks and tree); the
        connection's ``last_synced_at`` changes when it has run."""
        services.request_sync(self.get_object(), acting_user=request.user)
        return Response(status=status.HTTP_202_ACCEPTED)


class InventoryObjectViewSet(ReadOnlyViewSet):
    queryset = InventoryObject.objects.select_related("connection")
    serializer_class = InventoryObjectSerializer
    filterset_class = InventoryObjectFilterSet
    ordering_fields = ["name", "kind"]


class VirtualMachineViewSet(ReadOnlyViewSet):
    queryset = VirtualMachine.objects.with_latest_restore_point().prefetch_related(
        "tags", "disks", "protecting_policies"
    )
    serializer_class = VirtualMachineSerializer
    filterset_class = VirtualMachineFilterSet
    ordering_fields = ["name", "power_state", "last_seen_at"]
    extra_actions = {"backup": "run", "reset_cbt": "change"}

    @extend_schema(request=VMBackupSerializer, responses={202: JobRunSerializer})
    @action(detail=True, methods=["post"])
    def backup(self, request: Request, pk: str | None = None) -> Response:
        """Back up this VM now."""
        body = VMBackupSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        run = start_vm_backup(
            self.get_object(),
            policy=body.validated_data.get("policy"),
            trigger=Trigger.API,
            acting_user=request.user,
        )
        return Response(JobRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=ResetCBTSerializer, responses=ResetCBTResultSerializer(many=True))
    @action(
        detail=False,
        methods=["post"],
        url_path="reset-cbt",
        filter_backends=[],
        pagination_class=None,
    )
    def reset_cbt(self, request: Request) -> Response:
        """Reset Changed Block Tracking on the selected vSphere VMs (their next backup reads in
        full and stores only new chunks)."""
        body = ResetCBTSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        wanted = set(body.validated_data["vms"])
        vms = list(
            VirtualMachine.objects.restrict(request.user, "change")
            .filter(pk__in=wanted)
            .select_related("connection")
        )
        missing = wanted - {vm.pk for vm in vms}
        if missing:
            raise ValidationError({"vms": f"Unknown or not yours to change: {sorted(missing)}."})
        results = services.reset_change_tracking(vms, acting_user=request.user)
        return Response(ResetCBTResultSerializer(results, many=True).data)


class VirtualDiskViewSet(ReadOnlyViewSet):
    queryset = VirtualDisk.objects.all()
    serializer_class = VirtualDiskSerializer
    filterset_class = VirtualDiskFilterSet
    ordering_fields = ["device_key", "capacity_bytes"]


class TagViewSet(ReadOnlyViewSet):
    queryset = Tag.objects.all()
    serializer_class = TagSerializer
    filterset_class = TagFilterSet
    ordering_fields = ["name"]


class ProxyViewSet(ServiceModelViewSet):
    queryset = Proxy.objects.prefetch_related("connections")
    serializer_class = ProxySerializer
    filterset_class = ProxyFilterSet
    ordering_fields = ["name", "last_heartbeat"]

    def service_create(self, data: dict[str, Any]) -> Proxy:
        connections = data.pop("connections", None)
        return services.create_proxy(
            data=data, connections=connections, acting_user=self.request.user
        )

    def service_update(self, instance: Proxy, data: dict[str, Any]) -> Proxy:
        connections = data.pop("connections", None)
        return services.update_proxy(
            instance, data=data, connections=connections, acting_user=self.request.user
        )

    def service_delete(self, instance: Proxy) -> None:
        services.delete_proxy(instance, acting_user=self.request.user)
