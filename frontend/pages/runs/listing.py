"""The runs list: the API's JobRunFilterSet on the runs the user may view, a sort order, a page.

Query parameters are the API's (``?state=working&policy=3&created_after=…&ordering=-started_at``)
plus ``period`` (last hour/day/week/month), which only fills ``created_after`` when it is empty,
and ``page``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.core.paginator import Page, Paginator
from django.db.models import DurationField, ExpressionWrapper, F, QuerySet
from django.db.models.functions import Coalesce, Now
from django.http import HttpRequest, QueryDict
from django.utils import timezone

from jobs.choices import RunKind, RunResult, RunState
from jobs.filtersets import JobRunFilterSet
from jobs.models import JobRun, ProtectionPolicy

from .fragments import RunRow, rows_of, visible_runs

PAGE_SIZE = 25
DEFAULT_ORDERING = "-created_at"
# Sortable columns: the key in ``?ordering=`` and what it sorts by (ties broken by newest id).
SORTS = {
    "created_at": "created_at",
    "started_at": "started_at",
    "duration": "duration",
    "bytes": "progress_done",
    "state": "state",
}
PERIODS = {
    "1h": ("Last hour", timedelta(hours=1)),
    "24h": ("Last 24 hours", timedelta(days=1)),
    "7d": ("Last 7 days", timedelta(days=7)),
    "30d": ("Last 30 days", timedelta(days=30)),
}
# Filters the form does not show but the list honours (links from other pages, e.g. a VM's).
HIDDEN_FILTERS = ("vm", "proxy", "requested_by", "trigger")


# The table's columns: label, the sort key (None: not sortable), CSS classes (hidden on narrow
# screens). The row template (_row.html) has one cell per column, in this order.
COLUMNS = (
    ("Run", "created_at", ""),  # its number and kind
    ("Policy / repository", None, ""),
    ("Status", "state", ""),
    ("Started", "started_at", "d-none d-md-table-cell"),
    ("Duration", "duration", "d-none d-md-table-cell"),
    ("Bytes", "bytes", "d-none d-lg-table-cell"),
    ("Progress", None, ""),
)


@dataclass(frozen=True)
class Column:
    label: str
    css: str
    url: str = ""  # "" when not sortable
    direction: str = ""  # "ascending", "descending" or "" when the list is not sorted by it


@dataclass
class Listing:
    filterset: JobRunFilterSet
    page: Page[JobRun]
    rows: list[RunRow]
    ordering: str
    columns: list[Column]
    page_urls: list[tuple[int | str, str]]  # (number or "…", url)
    previous_url: str
    next_url: str
    selected: dict[str, list[str]]
    policies: list[ProtectionPolicy]
    hidden: list[tuple[str, str]]
    other_errors: list[str]  # errors of filters the form does not show (e.g. ?vm=abc)
    filtered: bool

    @property
    def active_pks(self) -> list[int]:
        return [row.run.pk for row in self.rows if row.run.is_active]

    kinds = RunKind.choices
    states = RunState.choices
    results = RunResult.choices
    periods = [(key, label) for key, (label, _) in PERIODS.items()]


def _url(params: QueryDict, **changes: str | None) -> str:
    query = params.copy()
    for name, value in changes.items():
        query.pop(name, None)
        if value:
            query[name] = value
    for name in [n for n, values in query.lists() if not any(values)]:
        query.pop(name)
    encoded = query.urlencode()
    return f"?{encoded}" if encoded else "?"


def _ordered(runs: QuerySet[JobRun], ordering: str) -> QuerySet[JobRun]:
    key = ordering.removeprefix("-")
    column = SORTS[key]
    if key == "duration":
        runs = runs.annotate(
            duration=ExpressionWrapper(
                Coalesce(F("finished_at"), Now()) - F("started_at"), output_field=DurationField()
            )
        )
    expression = F(column).desc(nulls_last=True) if ordering.startswith("-") else F(column).asc()
    return runs.order_by(expression, "-id")


def _columns(params: QueryDict, ordering: str) -> list[Column]:
    columns = []
    for label, key, css in COLUMNS:
        if key is None:
            columns.append(Column(label, css))
        elif ordering == f"-{key}":
            columns.append(Column(label, css, _url(params, ordering=key, page=None), "descending"))
        elif ordering == key:
            columns.append(
                Column(label, css, _url(params, ordering=f"-{key}", page=None), "ascending")
            )
        else:  # newest, longest, largest first on the first click
            columns.append(Column(label, css, _url(params, ordering=f"-{key}", page=None)))
    return columns


def list_runs(request: HttpRequest) -> Listing:
    params = request.GET
    data = params.copy()
    period = PERIODS.get(params.get("period", ""))
    if period and not params.get("created_after"):
        data["created_after"] = (timezone.now() - period[1]).isoformat()
    filterset = JobRunFilterSet(data, queryset=visible_runs(request.user))
    ordering = params.get("ordering", DEFAULT_ORDERING)
    if ordering.removeprefix("-") not in SORTS:
        ordering = DEFAULT_ORDERING
    paginator = Paginator(_ordered(filterset.qs, ordering), PAGE_SIZE)
    page = paginator.get_page(params.get("page"))
    page_urls: list[tuple[int | str, str]] = [
        (number, _url(params, page=str(number)) if isinstance(number, int) else "")
        for number in paginator.get_elided_page_range(page.number, on_each_side=2, on_ends=1)
    ]
    shown = ("kind", "state", "result", "policy", "period", "created_after", "created_before")
    errors = filterset.errors
    return Listing(
        filterset=filterset,
        page=page,
        rows=rows_of(page.object_list),
        ordering=ordering,
        columns=_columns(params, ordering),
        page_urls=page_urls,
        previous_url=_url(params, page=str(page.number - 1)) if page.has_previous() else "",
        next_url=_url(params, page=str(page.number + 1)) if page.has_next() else "",
        selected={name: params.getlist(name) for name in shown},
        policies=list(ProtectionPolicy.objects.restrict(request.user, "view").only("pk", "name")),
        hidden=[(name, value) for name in HIDDEN_FILTERS for value in params.getlist(name)],
        other_errors=[
            f"{name}: {message}" if name != "__all__" else message
            for name, messages in errors.items()
            if name not in shown
            for message in messages
        ],
        filtered=any(params.getlist(name) for name in (*shown, *HIDDEN_FILTERS)),
    )
