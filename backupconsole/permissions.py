"""Row-level permissions: one queryset method, ``restrict(user, action)``.

Views, API viewsets, websocket consumers and tasks all ask the same question through it. A user's
``RoleAssignment`` rows grant the actions of a role, optionally only on some object types and only
on the rows matching a constraint (a dict of queryset lookups), so scoped roles (a VM owner, a
tenant's operator) use this same mechanism. Rows of a model with ``restrict_through`` follow their
parent row only (a run's tasks); rows of a model with ``restrict_also_through`` are allowed by
their own grants or by their parent's (a restore point: by grants on restore points, or on its
VM, so a VM owner restores their VMs' points in the console and the API alike). A model with
``restrict_owner = "<user fk>"`` also lets each user view and run (for a run: cancel) the rows
they requested themselves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar, cast

from django.db import models
from django.db.models import Q

from backupconsole.roles import ACTIONS, ROLE_ACTIONS

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

    from backupconsole.models import RoleAssignment

_M = TypeVar("_M", bound=models.Model)

_CACHE_ATTR = "_backupconsole_assignments"
OWNER_ACTIONS = frozenset({"view", "run"})


def _assignments(user: AbstractBaseUser | AnonymousUser) -> list[RoleAssignment]:
    cached = getattr(user, _CACHE_ATTR, None)
    if cached is None:
        from backupconsole.models import RoleAssignment

        cached = list(RoleAssignment.objects.filter(user_id=cast(int, user.pk)))
        setattr(user, _CACHE_ATTR, cached)
    return cached


def forget_cached_assignments(user: Any) -> None:
    if hasattr(user, _CACHE_ATTR):
        delattr(user, _CACHE_ATTR)


def grant_filter(user: Any, action: str, model: type[models.Model]) -> Q | None:
    """The rows of ``model`` on which ``user`` may take ``action``: a Q, or None for none."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    if user is None or not user.is_authenticated or not user.is_active:
        return None
    if user.is_superuser:
        return Q()
    while getattr(model, "restrict_through", None):
        model = model._meta.get_field(model.restrict_through).related_model  # type: ignore[attr-defined,assignment]
    label = model._meta.label_lower
    combined: Q | None = None
    for assignment in _assignments(user):
        if action not in ROLE_ACTIONS.get(assignment.role, frozenset()):
            continue
        if assignment.object_types and label not in assignment.object_types:
            continue
        if not assignment.constraints:
            return Q()
        clause = Q(**assignment.constraints)
        combined = clause if combined is None else combined | clause
    return combined


def _also_through(model: type[models.Model]) -> tuple[str, type[models.Model]] | None:
    """A model may declare ``restrict_also_through = "<fk>"``: its rows are also allowed where
    the row it points to is (a VM owner restores the VM's restore points)."""
    name = getattr(model, "restrict_also_through", None)
    if not name:
        return None
    return name, model._meta.get_field(name).related_model  # type: ignore[return-value]


def _owner_clause(user: Any, action: str, model: type[models.Model]) -> Q | None:
    """The user's own rows of a model that declares ``restrict_owner = "<user fk>"`` (for the
    actions in OWNER_ACTIONS, and active users only, as grants); None where that does not apply."""
    owner = getattr(model, "restrict_owner", None)
    if not owner or action not in OWNER_ACTIONS:
        return None
    if user is None or not user.is_authenticated or not user.is_active:
        return None
    return Q(**{owner: user.pk})


def may(user: Any, action: str, model: type[models.Model]) -> bool:
    """Whether ``user`` may take ``action`` on at least some rows of ``model`` (e.g. to create)."""
    if grant_filter(user, action, model) is not None:
        return True
    mine = _owner_clause(user, action, model)
    if mine is not None and model._default_manager.filter(mine).exists():
        return True
    also = _also_through(model)
    return also is not None and may(user, action, also[1])


class RestrictedQuerySet(models.QuerySet[_M]):
    """Rows of a model that declares ``restrict_through = "<fk>"`` (a run's tasks, a VM's disks)
    are visible exactly where their parent row is."""

    def restrict(self, user: Any, action: str = "view") -> RestrictedQuerySet[_M]:
        through = getattr(self.model, "restrict_through", None)
        if through:
            parent = self.model._meta.get_field(through).related_model
            allowed = parent.objects.restrict(user, action)  # type: ignore[union-attr]
            return self.filter(**{f"{through}__in": allowed.values("pk")})
        clause = grant_filter(user, action, self.model)
        if clause is not None and not clause:
            return self  # unconstrained
        mine = _owner_clause(user, action, self.model)  # one may follow and stop what one started
        if mine is not None:
            clause = mine if clause is None else clause | mine
        also = _also_through(self.model)
        if also is not None:
            name, parent = also
            allowed = parent.objects.restrict(user, action)  # type: ignore[attr-defined]
            via = Q(**{f"{name}__in": allowed.values("pk")})
            clause = via if clause is None else clause | via
        if clause is None:
            return self.none()
        return self.filter(clause).distinct()
