"""What the landing page shows: short lists and counts, each restricted to what the user may view.

Every list is ``Model.objects.restrict(user, "view")`` narrowed by the app's FilterSet. Each
FilterSet reads the query string under its own prefix (``?runs-state=working``,
``?connections-kind=kvm``) so one list's filters never leak into another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db import models
from django.http import HttpRequest, QueryDict
from django_filters import FilterSet

from backupconsole.permissions import may
from inventory.filtersets import ConnectionFilterSet, ProxyFilterSet, VirtualMachineFilterSet
from inventory.models import Connection, Proxy, VirtualMachine
from jobs.filtersets import JobRunFilterSet, ProtectionPolicyFilterSet
from jobs.models import JobRun, ProtectionPolicy
from storage.filtersets import RepositoryFilterSet
from storage.models import Repository

LIST_LIMIT = 10


@dataclass
class Panel:
    """One list on the page: whether the user may see it at all, its size and its first rows."""

    allowed: bool
    total: int = 0
    rows: list[Any] = field(default_factory=list)
    extra: dict[str, int] = field(default_factory=dict)


def filtered(
    request: HttpRequest,
    model: type[models.Model],
    filterset_class: type[FilterSet],
    prefix: str,
    data: QueryDict | None = None,
) -> models.QuerySet[Any]:
    queryset = model.objects.restrict(request.user, "view")  # type: ignore[attr-defined]
    data = request.GET if data is None else data
    return filterset_class(data, queryset=queryset, prefix=prefix).qs


def _panel(
    request: HttpRequest, queryset: models.QuerySet[Any], model: type[models.Model]
) -> Panel:
    if not may(request.user, "view", model):
        return Panel(allowed=False)
    return Panel(allowed=True, total=queryset.count(), rows=list(queryset[:LIST_LIMIT]))


def _vm_panel(request: HttpRequest) -> Panel:
    if not may(request.user, "view", VirtualMachine):
        return Panel(allowed=False)
    data = request.GET.copy()
    data.setdefault("vms-present", "true")  # VMs gone from the hypervisor, unless asked for
    vms = filtered(request, VirtualMachine, VirtualMachineFilterSet, "vms", data)
    protected = vms.filter(protecting_policies__isnull=False).values("pk").distinct().count()
    total = vms.count()
    return Panel(
        allowed=True, total=total, extra={"protected": protected, "unprotected": total - protected}
    )


def _proxy_panel(request: HttpRequest) -> Panel:
    proxies = filtered(request, Proxy, ProxyFilterSet, "proxies")
    panel = _panel(request, proxies, Proxy)
    if panel.allowed:
        panel.extra["online"] = Proxy.objects.live().filter(pk__in=proxies.values("pk")).count()
    return panel


def _repository_panel(request: HttpRequest) -> Panel:
    queryset = filtered(request, Repository, RepositoryFilterSet, "repositories")
    panel = _panel(request, queryset, Repository)
    for repository in panel.rows:
        capacity = repository.capacity_bytes
        repository.used_percent = (
            min(100, round(100 * repository.used_bytes / capacity)) if capacity else None
        )
    return panel


def dashboard_context(request: HttpRequest) -> dict[str, Any]:
    policies = filtered(request, ProtectionPolicy, ProtectionPolicyFilterSet, "policies")
    runs = filtered(request, JobRun, JobRunFilterSet, "runs")
    panels = {
        "connections": _panel(
            request,
            filtered(request, Connection, ConnectionFilterSet, "connections"),
            Connection,
        ),
        "vms": _vm_panel(request),
        "policies": _panel(request, policies.select_related("repository"), ProtectionPolicy),
        "runs": _panel(request, runs.select_related("policy"), JobRun),
        "repositories": _repository_panel(request),
        "proxies": _proxy_panel(request),
    }
    return {**panels, "nothing_visible": not any(panel.allowed for panel in panels.values())}
