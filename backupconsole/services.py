"""Domain actions on roles and API tokens."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from rest_framework.authtoken.models import Token

from backupconsole import audit
from backupconsole.models import RoleAssignment
from backupconsole.permissions import forget_cached_assignments


def assign_role(
    *,
    user: Any,
    role: str,
    object_types: list[str] | None = None,
    constraints: dict[str, Any] | None = None,
    acting_user: Any,
) -> RoleAssignment:
    assignment = RoleAssignment(
        user=user, role=role, object_types=object_types or [], constraints=constraints or {}
    )
    assignment.full_clean()  # ValidationError → 400 with field errors in the API
    with transaction.atomic():
        assignment.save()
        audit.record(
            "core.role.assign",
            assignment,
            acting_user=acting_user,
            after=audit.snapshot(assignment),
        )
    forget_cached_assignments(user)
    return assignment


def revoke_role(assignment: RoleAssignment, *, acting_user: Any) -> None:
    with transaction.atomic():
        audit.record(
            "core.role.revoke",
            assignment,
            acting_user=acting_user,
            before=audit.snapshot(assignment),
        )
        assignment.delete()
    forget_cached_assignments(assignment.user)


def obtain_token(user: Any) -> Token:
    """The user's API token, created on first request (a login, so the user acts)."""
    with transaction.atomic():
        token, created = Token.objects.get_or_create(user=user)
        if created:
            audit.record("core.token.create", user, acting_user=user)
    return token


def rotate_token(user: Any, *, acting_user: Any) -> Token:
    """The user's API token; a new one replaces (and so revokes) the old."""
    with transaction.atomic():
        Token.objects.filter(user=user).delete()
        token = Token.objects.create(user=user)
        audit.record("core.token.rotate", user, acting_user=acting_user)
    return token


def ensure_administrator(*, username: str, password: str, email: str = "") -> tuple[Any, bool]:
    """Create the first administrator if no user exists yet. Returns (user, created)."""
    User = get_user_model()
    existing = User.objects.filter(username=username).first()
    if existing is not None:
        return existing, False
    with transaction.atomic():
        user = User.objects.create_superuser(username=username, email=email, password=password)
        audit.record("core.user.bootstrap", user, acting_user=None)
    return user, True
