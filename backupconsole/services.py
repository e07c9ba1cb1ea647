"""Domain actions on users, roles and API tokens."""

from __future__ import annotations

import secrets
from typing import Any

from django.apps import apps
from django.contrib.auth import get_user_model, password_validation
from django.core.exceptions import FieldError, ValidationError
from django.db import models, transaction
from rest_framework.authtoken.models import Token

from backupconsole import audit
from backupconsole.errors import ActionRefused
from backupconsole.models import RoleAssignment
from backupconsole.permissions import forget_cached_assignments
from backupconsole.roles import Role


def assign_role(
    *,
    user: Any,
    role: str,
    object_types: list[str] | None = None,
    constraints: dict[str, Any] | None = None,
    acting_user: Any,
) -> RoleAssignment:
    object_types = [] if object_types is None else object_types
    constraints = {} if constraints is None else constraints
    assignment = RoleAssignment(
        user=user, role=role, object_types=object_types, constraints=constraints
    )
    assignment.full_clean()  # ValidationError → 400 with field errors in the API
    _validate_scope(object_types, constraints)
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
        if _administers(assignment) and assignment.user.is_active:
            _refuse_removing_last_administrator(assignment=assignment)
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
        replaced, _ = Token.objects.filter(user=user).delete()
        token = Token.objects.create(user=user)
        action = "core.token.rotate" if replaced else "core.token.create"
        audit.record(action, user, acting_user=acting_user)
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


# --- scopes --------------------------------------------------------------------------------


def scopable_object_types() -> dict[str, str]:
    """Model labels a role can be limited to, with their names: models checked by ``restrict``
    on their own rows (a disk or a task follows its VM's or run's permissions instead)."""
    found = {}
    for model in apps.get_models():
        manager = model._default_manager
        if not hasattr(manager, "restrict") or getattr(model, "restrict_through", None):
            continue
        found[model._meta.label_lower] = str(model._meta.verbose_name).capitalize()
    return dict(sorted(found.items()))


def _validate_scope(object_types: Any, constraints: Any) -> None:
    """Refuse a scope that ``restrict`` could not apply: a bad lookup would make every page
    of the user fail rather than show nothing."""
    if not isinstance(object_types, list) or not all(isinstance(t, str) for t in object_types):
        raise ValidationError({"object_types": "A list of model labels."})
    if not isinstance(constraints, dict):
        raise ValidationError({"constraints": "An object of queryset lookups."})
    known = scopable_object_types()
    unknown = [label for label in object_types if label not in known]
    if unknown:
        raise ValidationError(
            {
                "object_types": f"Unknown object type: {', '.join(unknown)}. Use one of: "
                f"{', '.join(known)}."
            }
        )
    for label in object_types if constraints else ():
        model: type[models.Model] = apps.get_model(label)
        try:
            model._default_manager.filter(**constraints)
        except (FieldError, ValueError, TypeError, ValidationError) as exc:
            raise ValidationError(
                {"constraints": f"Not a valid lookup on {label}: {exc}"}
            ) from None


# --- the last administrator ----------------------------------------------------------------


def _administers(assignment: RoleAssignment) -> bool:
    """Whether the assignment lets its holder manage every role assignment, and so everything."""
    label = RoleAssignment._meta.label_lower
    return (
        assignment.role == Role.ADMINISTRATOR
        and not assignment.constraints
        and (not assignment.object_types or label in assignment.object_types)
    )


def _refuse_removing_last_administrator(
    *, assignment: RoleAssignment | None = None, user: Any = None
) -> None:
    """Refuse removing ``assignment`` or deactivating ``user`` when afterwards no active user
    could administer the console (where there is none already, nothing changes that).

    Call inside a transaction: the administrators' assignments stay locked until it ends, so two
    administrators removed at the same time cannot each count on the other.
    """
    locked = list(
        RoleAssignment.objects.select_for_update(of=("self",)).filter(
            role=Role.ADMINISTRATOR, user__is_active=True
        )
    )
    superusers = set(
        get_user_model()
        .objects.filter(is_active=True, is_superuser=True)
        .values_list("pk", flat=True)
    )
    now = {a.user_id for a in locked if _administers(a)} | superusers
    after = {a.user_id for a in locked if _administers(a) and a != assignment} | superusers
    if user is not None:
        after.discard(user.pk)
    if now and not after:
        raise ActionRefused(
            "This would leave no administrator: make another user an administrator first."
        )


# --- users ---------------------------------------------------------------------------------


def generate_password() -> str:
    """A random password that passes the password validators (about 120 bits)."""
    return secrets.token_urlsafe(15)


def _validate_password(password: str, user: Any) -> None:
    try:
        password_validation.validate_password(password, user)
    except ValidationError as exc:
        raise ValidationError({"password": exc.messages}) from None


def create_user(
    *,
    username: str,
    password: str,
    email: str = "",
    first_name: str = "",
    last_name: str = "",
    acting_user: Any,
) -> Any:
    User = get_user_model()
    user = User(username=username, email=email, first_name=first_name, last_name=last_name)
    user.full_clean(exclude=["password"])  # user name rules and uniqueness, e-mail format
    _validate_password(password, user)
    user.set_password(password)
    with transaction.atomic():
        user.save()
        audit.record("core.user.create", user, acting_user=acting_user, after=audit.snapshot(user))
    return user


def set_user_active(user: Any, active: bool, *, acting_user: Any) -> None:
    """Deactivate (the user can no longer sign in or use a token) or reactivate a user."""
    if user.is_active == active:
        return
    if not active and acting_user is not None and user.pk == acting_user.pk:
        raise ActionRefused("You cannot deactivate your own account.")
    with transaction.atomic():
        if not active:
            _refuse_removing_last_administrator(user=user)
        user.is_active = active
        user.save(update_fields=["is_active"])
        audit.record(
            "core.user.reactivate" if active else "core.user.deactivate",
            user,
            acting_user=acting_user,
            before={"is_active": not active},
            after={"is_active": active},
        )


def reset_password(user: Any, password: str, *, acting_user: Any) -> None:
    """Set a new password; the user's other sessions end (Django checks the password hash)."""
    _validate_password(password, user)
    user.set_password(password)
    with transaction.atomic():
        user.save(update_fields=["password"])
        audit.record("core.user.password_reset", user, acting_user=acting_user)


# --- API tokens ----------------------------------------------------------------------------


def revoke_token(user: Any, *, acting_user: Any) -> bool:
    """Delete the user's API token; False when the user had none."""
    with transaction.atomic():
        deleted, _ = Token.objects.filter(user=user).delete()
        if deleted:
            audit.record("core.token.revoke", user, acting_user=acting_user)
    return bool(deleted)
