"""Base viewsets: every queryset goes through ``restrict``; every write through a service."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from rest_framework import mixins, viewsets


class RestrictedViewSetMixin:
    def get_queryset(self) -> QuerySet[Any]:
        return self.queryset.restrict(self.request.user, "view")  # type: ignore[attr-defined]


class ReadOnlyViewSet(RestrictedViewSetMixin, viewsets.ReadOnlyModelViewSet):
    pass


class ServiceModelViewSet(
    RestrictedViewSetMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Create, update and delete call ``service_create``/``service_update``/``service_delete``."""

    def perform_create(self, serializer: Any) -> None:
        serializer.instance = self.service_create(dict(serializer.validated_data))

    def perform_update(self, serializer: Any) -> None:
        serializer.instance = self.service_update(
            serializer.instance, dict(serializer.validated_data)
        )

    def perform_destroy(self, instance: Any) -> None:
        self.service_delete(instance)

    def service_create(self, data: dict[str, Any]) -> Any:
        raise NotImplementedError

    def service_update(self, instance: Any, data: dict[str, Any]) -> Any:
        raise NotImplementedError

    def service_delete(self, instance: Any) -> None:
        raise NotImplementedError
