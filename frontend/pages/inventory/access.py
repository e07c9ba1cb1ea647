"""Permission and HTMX helpers shared by the inventory pages."""

from __future__ import annotations

from typing import Any, TypeVar, cast

from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import QuerySet
from django.http import Http404, HttpRequest
from django.utils.http import url_has_allowed_host_and_scheme

from backupconsole.permissions import RestrictedQuerySet, grant_filter
from frontend.htmx import is_partial

M = TypeVar("M", bound=models.Model)


def htmx_target(request: HttpRequest) -> str:
    return request.headers.get("HX-Target", "") if is_partial(request) else ""


def visible_or_404(queryset: QuerySet[M], user: Any, pk: int) -> M:
    """The row if ``user`` may see it; 404 otherwise, so hidden rows are not even confirmed."""
    restricted = cast(RestrictedQuerySet[M], queryset).restrict(user, "view")
    found = restricted.filter(pk=pk).first()
    if found is None:
        raise Http404("No such object.")
    return found


def may_act(user: Any, instance: models.Model, action: str) -> bool:
    manager = type(instance).objects  # type: ignore[attr-defined]
    return bool(allowed_pks(manager.all(), [instance.pk], user, action))


def require(user: Any, instance: models.Model, action: str) -> None:
    """403 unless ``user`` may take ``action`` on this row (checked on the server, always)."""
    if not may_act(user, instance, action):
        raise PermissionDenied(f"You may not {action} this {instance._meta.verbose_name}.")


def allowed_pks(
    queryset: RestrictedQuerySet[Any], pks: list[int], user: Any, action: str
) -> set[int]:
    """Those of ``pks`` (rows of ``queryset``) on which ``user`` may take ``action``, by the one
    rule (``restrict``: grants on the rows, their parents, one's own rows); no query when the
    role covers every row."""
    grant = grant_filter(user, action, queryset.model)
    if grant is not None and not grant:  # every row
        return set(pks)
    return set(queryset.filter(pk__in=pks).restrict(user, action).values_list("pk", flat=True))


def safe_next(request: HttpRequest, default: str) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return default
