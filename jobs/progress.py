"""Run progress as small typed events, sent to per-run channel groups and the "runs" group.

The websocket consumers forward an event only to users who may view that run; the event carries
the run's state and its task tree, so a client can render it without another query.
"""

from __future__ import annotations

import time
from typing import TypedDict

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from jobs.models import JobRun, RunTask

ALL_RUNS_GROUP = "runs"


def run_group(run_pk: int) -> str:
    return f"run.{run_pk}"


class TaskEvent(TypedDict):
    id: int
    parent: int | None
    kind: str
    phase: str
    name: str
    state: str
    message: str
    bytes_done: int
    bytes_total: int
    rate_bps: int
    eta_seconds: int | None
    busy_source: float | None
    busy_proxy: float | None
    busy_repository: float | None
    bottleneck: str


class RunEvent(TypedDict):
    type: str  # the consumer method: "run.update"
    run: int
    state: str
    result: str
    reason: str
    bytes_done: int
    bytes_total: int
    rate_bps: int
    eta_seconds: int | None
    tasks: list[TaskEvent]


def _task_event(task: RunTask) -> TaskEvent:
    return TaskEvent(
        id=task.pk,
        parent=task.parent_id,
        kind=task.kind,
        phase=task.phase,
        name=task.name,
        state=task.state,
        message=task.message,
        bytes_done=task.bytes_done,
        bytes_total=task.bytes_total,
        rate_bps=task.rate_bps,
        eta_seconds=task.eta_seconds,
        busy_source=task.busy_source,
        busy_proxy=task.busy_proxy,
        busy_repository=task.busy_repository,
        bottleneck=task.bottleneck,
    )


def build_event(run: JobRun) -> RunEvent:
    return RunEvent(
        type="run.update",
        run=run.pk,
        state=run.state,
        result=run.result,
        reason=run.reason,
        bytes_done=run.bytes_done,
        bytes_total=run.bytes_total,
        rate_bps=run.rate_bps,
        eta_seconds=run.eta_seconds,
        tasks=[_task_event(t) for t in run.tasks.all()],
    )


def publish_run(run_pk: int) -> None:
    run = JobRun.objects.get(pk=run_pk)
    event = build_event(run)
    layer = get_channel_layer()
    if layer is None:
        return
    send = async_to_sync(layer.group_send)
    send(run_group(run_pk), dict(event))
    send(ALL_RUNS_GROUP, dict(event))


class Throttle:
    """Lets an update through at most every ``interval`` seconds, or when forced."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._last = float("-inf")

    def ready(self, *, force: bool = False) -> bool:
        now = time.monotonic()
        if force or now - self._last >= self.interval:
            self._last = now
            return True
        return False
