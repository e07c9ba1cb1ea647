"""The API's permission check: the same ``restrict``/``may`` used everywhere else."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from backupconsole.permissions import may

METHOD_ACTIONS = {
    "GET": "view",
    "HEAD": "view",
    "OPTIONS": "view",
    "POST": "add",
    "PUT": "change",
    "PATCH": "change",
    "DELETE": "delete",
}


def required_action(request: Request, view: Any) -> str:
    """A viewset may name the action its extra endpoints need in ``extra_actions``."""
    extra: dict[str, str] = getattr(view, "extra_actions", {})
    if getattr(view, "action", None) in extra:
        return extra[view.action]
    return METHOD_ACTIONS.get(request.method or "GET", "manage")


class RestrictedPermission(BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        if not request.user or not request.user.is_authenticated:
            return False
        queryset = getattr(view, "queryset", None)
        if queryset is None:
            return True
        return may(request.user, required_action(request, view), queryset.model)

    def has_object_permission(self, request: Request, view: Any, obj: Any) -> bool:
        action = required_action(request, view)
        if action == "view":
            return True  # the queryset was already restricted to viewable rows
        return type(obj).objects.restrict(request.user, action).filter(pk=obj.pk).exists()
