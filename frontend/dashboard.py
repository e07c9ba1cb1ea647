"""What the dashboard shows: each card's figures, restricted to the rows the user may view.

A card is None when the user may not view its model at all (the template leaves it out). Counts
that link to a list page are computed with that page's FilterSet and the same query string, so
the number on the card is the number of rows the link shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from django.db.models import Count, Max, Min, Q, Sum
from django.db.models.functions import TruncDate
from django.http import HttpRequest
from django.utils import timezone
from django.utils.formats import date_format

from backupconsole.models import RoleAssignment
from backupconsole.permissions import may
from frontend.pages.runs.fragments import running_runs
from frontend.templatetags.console_tags import console_url
from inventory.filtersets import VirtualMachineFilterSet
from inventory.models import Connection, VirtualMachine
from jobs.choices import RunKind, RunResult, TaskKind, TaskState
from jobs.filtersets import JobRunFilterSet
from jobs.models import JobRun, ProtectionPolicy, RunTask
from storage.choices import USABLE_POINT_STATES
from storage.models import Repository
from storage.usage import RepositoryUsage, usage_of, with_usage

LIST_LIMIT = 8
THROUGHPUT_DAYS = 14
# A restore point counts for the RPO once it is complete (verified or not, but not corrupt).


def _link(page: str, query: dict[str, str]) -> str:
    """The URL of a list page with a filter, or "" while that page does not exist yet."""
    url = console_url(page)
    return f"{url}?{urlencode(query)}" if url else ""


# --- protected / unprotected VMs -----------------------------------------------------------------

PROTECTION_FILTERS = {
    "protected": {"present": "true", "protected": "true"},
    "unprotected": {"present": "true", "protected": "false"},
}


@dataclass(frozen=True)
class Protection:
    protected: int
    unprotected: int
    links: dict[str, str]
    has_connections: bool

    @property
    def total(self) -> int:
        return self.protected + self.unprotected

    @property
    def protected_percent(self) -> int:
        return round(100 * self.protected / self.total) if self.total else 0


def protection(user: Any) -> Protection | None:
    if not may(user, "view", VirtualMachine):
        return None
    vms = VirtualMachine.objects.restrict(user, "view")
    counts = {
        name: VirtualMachineFilterSet(query, queryset=vms).qs.count()
        for name, query in PROTECTION_FILTERS.items()
    }
    return Protection(
        protected=counts["protected"],
        unprotected=counts["unprotected"],
        links={name: _link("inventory", query) for name, query in PROTECTION_FILTERS.items()},
        has_connections=Connection.objects.restrict(user, "view").exists(),
    )


# --- runs of the last 24 hours -------------------------------------------------------------------

RESULTS_SHOWN = (RunResult.SUCCEEDED, RunResult.WARNING, RunResult.FAILED)


@dataclass(frozen=True)
class RecentRuns:
    since: datetime
    counts: dict[str, int]  # by result
    links: dict[str, str]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def recent_runs(user: Any, now: datetime) -> RecentRuns | None:
    if not may(user, "view", JobRun):
        return None
    since = (now - timedelta(days=1)).replace(second=0, microsecond=0)
    window = {"created_after": since.isoformat()}
    runs = JobRunFilterSet(window, queryset=JobRun.objects.restrict(user, "view")).qs
    counts = runs.aggregate(
        **{result: Count("pk", filter=Q(result=result)) for result in RESULTS_SHOWN}
    )
    links = {str(r): _link("runs", {**window, "result": r}) for r in RESULTS_SHOWN}
    return RecentRuns(since=since, counts=counts, links=links)


# --- repositories --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Repositories:
    rows: list[RepositoryUsage]
    total: int


def repositories(user: Any) -> Repositories | None:
    if not may(user, "view", Repository):
        return None
    queryset = Repository.objects.restrict(user, "view")
    return Repositories(rows=usage_of(with_usage(queryset)[:LIST_LIMIT]), total=queryset.count())


# --- throughput ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Throughput:
    days: list[dict[str, Any]]  # {"day": ISO date, "label": short date, "bytes": int}

    @property
    def total(self) -> int:
        return sum(day["bytes"] for day in self.days)


def throughput(user: Any, now: datetime) -> Throughput | None:
    """Bytes read from VM disks by finished backups, per day of the user's time zone."""
    if not may(user, "view", JobRun):
        return None
    zone = timezone.get_current_timezone()
    first = timezone.localdate(now, zone) - timedelta(days=THROUGHPUT_DAYS - 1)
    rows = (
        RunTask.objects.restrict(user, "view")
        .filter(
            kind=TaskKind.DISK,
            run__kind=RunKind.BACKUP,
            state__in=(TaskState.SUCCEEDED, TaskState.WARNING),
            finished_at__gte=datetime.combine(first, time.min, tzinfo=zone),
        )
        .annotate(day=TruncDate("finished_at", tzinfo=zone))
        .values("day")
        .annotate(total=Sum("bytes_done"))
        .order_by()
    )
    per_day = {row["day"]: row["total"] or 0 for row in rows}
    days = [first + timedelta(days=offset) for offset in range(THROUGHPUT_DAYS)]
    return Throughput(
        days=[
            {"day": day.isoformat(), "label": date_format(day, "M j"), "bytes": per_day.get(day, 0)}
            for day in days
        ]
    )


# --- RPO breach ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Breach:
    vm: VirtualMachine
    rpo_hours: int
    last_point: datetime | None
    overdue_since: datetime  # when the target was missed


@dataclass
class RpoStatus:
    watched: int  # VMs protected by an enabled policy
    breaches: list[Breach] = field(default_factory=list)
    total: int = 0


def rpo_status(user: Any, now: datetime) -> RpoStatus | None:
    """VMs whose newest good restore point is older than their policy's ``rpo_hours``.

    A VM under several enabled policies must meet the tightest target. A VM never backed up is
    measured from when its policy was created, so a new policy is not in breach at once.
    """
    if not may(user, "view", VirtualMachine):
        return None
    enabled = Q(protecting_policies__enabled=True)
    rows = (
        VirtualMachine.objects.restrict(user, "view")
        .filter(present=True)
        .annotate(
            rpo_hours=Min("protecting_policies__rpo_hours", filter=enabled),
            watched_since=Min("protecting_policies__created_at", filter=enabled),
            last_point=Max(
                "restore_points__created_at",
                filter=Q(restore_points__state__in=USABLE_POINT_STATES),
            ),
        )
        .filter(rpo_hours__isnull=False)
        .values_list("pk", "rpo_hours", "watched_since", "last_point")
    )
    status = RpoStatus(watched=0)
    missed: list[tuple[int, int, datetime | None, datetime]] = []
    for pk, rpo_hours, watched_since, last_point in rows:
        status.watched += 1
        deadline = (last_point or watched_since) + timedelta(hours=rpo_hours)
        if deadline < now:
            missed.append((pk, rpo_hours, last_point, deadline))
    missed.sort(key=lambda row: row[3])  # longest overdue first
    status.total = len(missed)
    shown = missed[:LIST_LIMIT]
    vms = VirtualMachine.objects.select_related("connection").in_bulk([row[0] for row in shown])
    status.breaches = [
        Breach(vm=vms[pk], rpo_hours=hours, last_point=last, overdue_since=deadline)
        for pk, hours, last, deadline in shown
    ]
    return status


# --- next steps for a newcomer -------------------------------------------------------------------


def next_steps(user: Any) -> dict[str, str]:
    """Pages where the user can add what an empty card lacks (only those they may add)."""
    pages = {
        "connection": ("connection-new", Connection),
        "repository": ("repository-new", Repository),
        "policy": ("policy-new", ProtectionPolicy),
    }
    return {
        name: url
        for name, (page, model) in pages.items()
        if may(user, "add", model) and (url := console_url(page))
    }


def dashboard_context(request: HttpRequest) -> dict[str, Any]:
    user, now = request.user, timezone.now()
    cards = {
        "protection": protection(user),
        "recent_runs": recent_runs(user, now),
        "repositories": repositories(user),
        "throughput": throughput(user, now),
        "rpo": rpo_status(user, now),
    }
    running = running_runs(user)  # the Runs area's live panel: {"running": RunningPanel}
    return {
        **cards,
        **running,
        "has_policies": may(user, "view", ProtectionPolicy)
        and ProtectionPolicy.objects.restrict(user, "view").exists(),
        "next_steps": next_steps(user),
        "nothing_visible": all(card is None for card in cards.values())
        and not running["running"].allowed,
        "has_role": user.is_superuser
        or RoleAssignment.objects.filter(user_id=user.pk or 0).exists(),
    }
