"""Who administers accounts: the ``manage`` action on role assignments, as in the API."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

from backupconsole.models import RoleAssignment
from backupconsole.permissions import may


def manages_accounts(user: Any) -> bool:
    return may(user, "manage", RoleAssignment)


def require_account_manager(request: HttpRequest) -> None:
    if not manages_accounts(request.user):
        raise PermissionDenied("Only administrators manage users.")
