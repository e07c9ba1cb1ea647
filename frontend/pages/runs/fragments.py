"""The runs' HTML fragments: the run page's live part, a list row and the running-runs panel.

Each is rendered by one function here from what the user may view, without the request, so the
page, its polling endpoint and the websocket consumer send exactly the same HTML (a reload shows
what the live view showed). Times come out in the active time zone, which the caller sets.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from django.db.models import Count, Q, QuerySet
from django.template.loader import render_to_string

from backupconsole.permissions import may
from jobs.choices import LogLevel, RunKind, RunState, TaskKind
from jobs.models import JobRun
from storage.models import RestorePoint

from .progress import Progress, build_tree, busy_of, run_progress, with_progress
from .sockets import running_socket

LIVE_TEMPLATE = "frontend/runs/_live.html"
ROW_TEMPLATE = "frontend/runs/_row.html"
RUNNING_LIST_TEMPLATE = "frontend/runs/_running_list.html"
LOG_LIMIT = 200
WARNING_LIMIT = 20
RUNNING_LIMIT = 6
ACTIVE_STATES = tuple(s for s in RunState.values if s != RunState.FINISHED)


def visible_runs(user: Any) -> QuerySet[JobRun]:
    """The runs ``user`` may view, with what every runs view shows (no query per row)."""
    runs = JobRun.objects.restrict(user, "view").select_related(
        "policy", "repository", "requested_by", "proxy"
    )
    return with_progress(runs)


def may_cancel(user: Any, run: JobRun) -> bool:
    """Cancelling is the "run" action on the run, as in the API."""
    return run.is_active and JobRun.objects.restrict(user, "run").filter(pk=run.pk).exists()


KIND_ICONS: dict[str, str] = {
    RunKind.BACKUP: "cloud-arrow-up",
    RunKind.RESTORE: "arrow-counterclockwise",
    RunKind.VERIFY: "patch-check",
    RunKind.PRUNE: "scissors",
    RunKind.GC: "recycle",
    RunKind.COPY: "files",
}


@dataclass(frozen=True)
class RunRow:
    """A run with what a line about it shows."""

    run: JobRun
    progress: Progress

    @property
    def icon(self) -> str:
        return KIND_ICONS.get(self.run.kind, "play-circle")

    @property
    def duration(self) -> timedelta | None:
        """How long a finished run took (a running one's time is counted in the browser)."""
        run = self.run
        if run.started_at is None or run.finished_at is None:
            return None
        return run.finished_at - run.started_at


def rows_of(runs: Iterable[JobRun]) -> list[RunRow]:
    return [RunRow(run, run_progress(run)) for run in runs]


# --- the run page ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunStep:
    key: str
    label: str
    status: str  # "done", "current", "pending"


def _run_steps(run: JobRun) -> list[RunStep]:
    keys: list[str] = [RunState.QUEUED, RunState.STARTING, RunState.WORKING]
    if run.kind == RunKind.BACKUP:
        keys.append(RunState.POST_PROCESSING)
    keys.append(RunState.FINISHED)
    state = RunState.WORKING if run.state == RunState.WAITING_REPOSITORY else run.state
    current = keys.index(state) if state in keys else 0
    steps = []
    for index, key in enumerate(keys):
        label = RunState(key).label
        if key == RunState.WORKING and run.state == RunState.WAITING_REPOSITORY:
            label = RunState.WAITING_REPOSITORY.label
        if key == RunState.FINISHED and run.result:
            label = run.get_result_display()
        status = "done" if index < current else "current" if index == current else "pending"
        if key == RunState.FINISHED and index == current:
            status = "done"
        steps.append(RunStep(key, label, status))
    return steps


def _restore_point(user: Any, run: JobRun) -> RestorePoint | None:
    pk = run.options.get("restore_point") if run.kind == RunKind.RESTORE else None
    if not pk:
        return None
    return RestorePoint.objects.restrict(user, "view").filter(pk=pk).first()


def live_context(user: Any, run: JobRun) -> dict[str, Any]:
    """Everything the live part of the run page shows; ``run`` comes from ``visible_runs``."""
    tasks = list(run.tasks.select_related("proxy"))
    counts = run.logs.aggregate(
        total=Count("id"), warnings=Count("id", filter=Q(level__gte=LogLevel.WARNING))
    )
    newest = run.logs.select_related("task").order_by("-time", "-id")
    logs = list(newest[:LOG_LIMIT])[::-1]
    warnings = list(newest.filter(level__gte=LogLevel.WARNING)[:WARNING_LIMIT])[::-1]
    tree = build_tree(tasks, active=run.is_active)
    row = RunRow(run, run_progress(run))
    return {
        "run": run,
        "row": row,
        "progress": row.progress,
        "busy": busy_of(t for t in tasks if t.kind == TaskKind.DISK),
        "steps": _run_steps(run),
        "tree": tree,
        "waiting": [node for node in tree if node.waiting],
        "logs": logs,
        "log_total": counts["total"],
        "warnings": warnings,
        "warning_total": counts["warnings"],
        "restore_point": _restore_point(user, run),
        "may_cancel": may_cancel(user, run),
    }


def render_live(context: dict[str, Any]) -> str:
    """The live fragment (``<div id="run-live">``) from ``live_context``; the page embeds this
    very string, so it cannot differ from what the socket and the polling endpoint send."""
    return render_to_string(LIVE_TEMPLATE, context)


def live_html(user: Any, pk: int) -> str | None:
    """The run page's live fragment for ``user``, or None when they may not view the run."""
    run = visible_runs(user).filter(pk=pk).first()
    return None if run is None else render_live(live_context(user, run))


# --- list rows ---------------------------------------------------------------------------------


def rows_html(user: Any, pks: Iterable[int]) -> str:
    """The list rows (``<tr id="run-row-N">``) of those runs ``user`` may view."""
    runs = visible_runs(user).filter(pk__in=list(pks)).order_by("pk")
    return "".join(render_to_string(ROW_TEMPLATE, {"row": row}) for row in rows_of(runs))


# --- the dashboard's running-runs panel --------------------------------------------------------


@dataclass(frozen=True)
class RunningPanel:
    allowed: bool
    total: int = 0
    rows: tuple[RunRow, ...] = ()
    # The runs list narrowed to active runs (the FilterSet's repeated ``state`` parameter).
    list_query: str = urlencode([("state", state) for state in ACTIVE_STATES])
    socket: str = running_socket()


def running_runs(user: Any) -> dict[str, RunningPanel]:
    """Context for ``frontend/runs/_running.html``: the active runs ``user`` may view, newest
    first (the dashboard merges this into its context)."""
    if not may(user, "view", JobRun):
        return {"running": RunningPanel(allowed=False)}
    runs = visible_runs(user).filter(state__in=ACTIVE_STATES)
    rows = rows_of(runs[:RUNNING_LIMIT])
    total = len(rows) if len(rows) < RUNNING_LIMIT else runs.count()
    return {"running": RunningPanel(allowed=True, total=total, rows=tuple(rows))}


def running_html(user: Any) -> str:
    """The panel's live part (``<div id="running-runs">``); "" for a user who may view no run."""
    context = running_runs(user)
    return render_to_string(RUNNING_LIST_TEMPLATE, context) if context["running"].allowed else ""
