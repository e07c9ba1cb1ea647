"""The proxies page: each backup worker's status, heartbeat, slots in use and queue."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.db.models import Count, OuterRef, Prefetch, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from frontend.pages.inventory.access import htmx_target
from inventory.models import Connection, Proxy
from jobs.choices import RunState, TaskKind, TaskState
from jobs.models import JobRun, RunTask

# The page refreshes itself this often, so a lost proxy shows up without a reload.
REFRESH_SECONDS = 15


def _count(queryset: object) -> Coalesce:
    """A per-proxy count as a subquery (two counts joined on one query would multiply)."""
    grouped = queryset.order_by().values("proxy").annotate(n=Count("pk")).values("n")  # type: ignore[attr-defined]
    return Coalesce(Subquery(grouped), 0)


@login_required
def proxy_list(request: HttpRequest) -> HttpResponse:
    user = request.user
    proxies = list(
        Proxy.objects.restrict(user, "view")
        .annotate(
            slots_in_use=_count(
                RunTask.objects.filter(
                    proxy=OuterRef("pk"), kind=TaskKind.VM, state=TaskState.RUNNING
                )
            ),
            active_runs=_count(
                JobRun.objects.filter(proxy=OuterRef("pk")).exclude(state=RunState.FINISHED)
            ),
        )
        .prefetch_related(
            Prefetch(
                "connections",
                queryset=Connection.objects.restrict(user, "view").only("id", "name"),
                to_attr="visible_connections",
            )
        )
    )
    context = {
        "proxies": proxies,
        "live_count": sum(1 for p in proxies if p.is_live),
        "refresh_seconds": REFRESH_SECONDS,
        "worker_command": (
            "BACKUPCONSOLE_PROXY_NAME=proxy-a celery -A backupconsole worker "
            "-Q proxy-a -n proxy-a@%h --pool threads -c 4"
        ),
    }
    if htmx_target(request) == "proxy-table-region":
        return render(request, "frontend/inventory/_proxy_table.html", context)
    return render(request, "frontend/inventory/proxies.html", context)
