from __future__ import annotations

from typing import Any, cast

from django.contrib.auth import authenticate, get_user_model
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle
from rest_framework.views import APIView

from backupconsole import services
from backupconsole.api.serializers import (
    AuditEventSerializer,
    RoleAssignmentSerializer,
    TokenRequestSerializer,
    TokenSerializer,
    UserSerializer,
)
from backupconsole.api.viewsets import ReadOnlyViewSet, ServiceModelViewSet
from backupconsole.filtersets import AuditEventFilterSet, RoleAssignmentFilterSet, UserFilterSet
from backupconsole.models import AuditEvent, RoleAssignment
from backupconsole.permissions import may


class LoginThrottle(AnonRateThrottle):
    rate = "20/min"


class ObtainTokenView(APIView):
    """Exchange a username and password for the user's API token."""

    permission_classes = [AllowAny]
    authentication_classes: list[Any] = []
    throttle_classes = [LoginThrottle]

    @extend_schema(request=TokenRequestSerializer, responses=TokenSerializer)
    def post(self, request: Request) -> Response:
        body = TokenRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        user = authenticate(
            request._request,
            username=body.validated_data["username"],
            password=body.validated_data["password"],
        )
        if user is None or not user.is_active:
            return Response(
                {"non_field_errors": ["Unknown user name or wrong password."]},
                status=status.HTTP_400_BAD_REQUEST,
            )
        return Response({"token": services.obtain_token(user).key})


class AuditEventViewSet(ReadOnlyViewSet):
    queryset = AuditEvent.objects.select_related("object_type")
    serializer_class = AuditEventSerializer
    filterset_class = AuditEventFilterSet
    ordering_fields = ["time", "action", "username"]


class RoleAssignmentViewSet(ServiceModelViewSet):
    """Who holds which role. Only administrators (action ``manage``) see and change these."""

    queryset = RoleAssignment.objects.select_related("user")
    serializer_class = RoleAssignmentSerializer
    filterset_class = RoleAssignmentFilterSet
    http_method_names = ["get", "post", "delete", "head", "options"]

    def get_queryset(self) -> Any:
        return self.queryset.restrict(self.request.user, "manage")

    def check_permissions(self, request: Request) -> None:
        super().check_permissions(request)
        if not may(request.user, "manage", RoleAssignment):
            self.permission_denied(request, message="Only administrators manage roles.")

    def service_create(self, data: dict[str, Any]) -> RoleAssignment:
        return services.assign_role(**data, acting_user=self.request.user)

    def service_delete(self, instance: RoleAssignment) -> None:
        services.revoke_role(instance, acting_user=self.request.user)


class UserViewSet(ReadOnlyViewSet):
    queryset = get_user_model().objects.prefetch_related("role_assignments").order_by("username")
    serializer_class = UserSerializer
    filterset_class = UserFilterSet

    def get_queryset(self) -> Any:
        user = self.request.user
        if may(user, "manage", RoleAssignment):
            return self.queryset
        return self.queryset.filter(pk=cast(int, user.pk))

    def check_permissions(self, request: Request) -> None:
        if not request.user or not request.user.is_authenticated:
            self.permission_denied(request)
