"""What the console shows of a run's progress, computed from its rows.

The run page, its live fragment, the list's rows and the dashboard's running panel all take their
numbers from here, so every view of a run shows the same figures. A backup's progress is the sum
over its disk tasks; a run without disks (a restore, a repository job) has its own counters.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db.models import BigIntegerField, F, OuterRef, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce

from jobs.choices import CHANGED_ONLY_NOTE, Phase, RunResult, TaskKind, TaskState
from jobs.models import JobRun, RunTask

STAGES = (
    ("source", "Source read"),
    ("proxy", "Proxy processing"),
    ("repository", "Repository write"),
)
STAGE_LABELS = dict(STAGES)
_DONE = frozenset({TaskState.SUCCEEDED, TaskState.WARNING})
_BROKEN = frozenset({TaskState.FAILED, TaskState.CANCELLED})


def _disk_sum(column: str, *states: str) -> Subquery:
    disks = RunTask.objects.filter(run=OuterRef("pk"), kind=TaskKind.DISK).exclude(
        state=TaskState.SKIPPED
    )
    if states:
        disks = disks.filter(state__in=states)
    totals = disks.order_by().values("run").annotate(total=Sum(column)).values("total")[:1]
    return Subquery(totals, output_field=BigIntegerField())


def with_progress(runs: QuerySet[JobRun]) -> QuerySet[JobRun]:
    """Annotates ``progress_done``, ``progress_total`` and ``progress_rate`` (one query for any
    number of runs): the sums over the run's disks, or the run's own counters without disks."""
    return runs.annotate(
        progress_done=Coalesce(_disk_sum("bytes_done"), F("bytes_done")),
        progress_total=Coalesce(_disk_sum("bytes_total"), F("bytes_total")),
        progress_rate=Coalesce(_disk_sum("rate_bps", TaskState.RUNNING), F("rate_bps")),
    )


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    rate: int
    eta: int | None
    percent: int | None  # None: no byte counts yet, so the bar is indeterminate
    active: bool

    @property
    def bar_width(self) -> int:
        return 100 if self.percent is None else self.percent


def _percent(done: int, total: int) -> int:
    # Rounded down: "100 %" appears only when everything is done.
    return max(0, min(100, done * 100 // total))


def _eta(done: int, total: int, rate: int) -> int | None:
    return (total - done) // rate if rate > 0 and total > done else None


def run_progress(run: JobRun) -> Progress:
    """Overall progress of a run annotated by ``with_progress``."""
    done = int(getattr(run, "progress_done", run.bytes_done) or 0)
    total = int(getattr(run, "progress_total", run.bytes_total) or 0)
    rate = int(getattr(run, "progress_rate", run.rate_bps) or 0) if run.is_active else 0
    percent: int | None
    if run.result == RunResult.SUCCEEDED:
        percent = 100
    elif total > 0:
        percent = _percent(done, total)
    elif run.is_active:
        percent = None
    else:
        percent = 100 if run.result == RunResult.WARNING else 0
    eta = _eta(done, total, rate) if run.is_active else None
    return Progress(done, total, rate, eta, percent, run.is_active)


def task_progress(tasks: Iterable[RunTask], *, active: bool) -> Progress:
    """Progress of one disk, or the sum over a VM's disks (skipped ones do not count)."""
    counted = [t for t in tasks if t.state != TaskState.SKIPPED]
    done = sum(t.bytes_done for t in counted)
    total = sum(t.bytes_total for t in counted)
    rate = sum(t.rate_bps for t in counted if t.state == TaskState.RUNNING)
    if counted and all(t.state in _DONE for t in counted):
        percent: int | None = 100
    elif total > 0:
        percent = _percent(done, total)
    else:
        percent = 0
    return Progress(done, total, rate, _eta(done, total, rate) if active else None, percent, active)


@dataclass(frozen=True)
class Share:
    key: str
    label: str
    percent: int


@dataclass(frozen=True)
class Busy:
    """How busy each stage was (Veeam's bottleneck figures); the busiest limits the rate."""

    shares: tuple[Share, ...]
    bottleneck: str

    @property
    def bottleneck_label(self) -> str:
        return STAGE_LABELS.get(self.bottleneck, self.bottleneck)


def busy_of(tasks: Iterable[RunTask]) -> Busy | None:
    """Busy shares over the given disk tasks, weighted by the bytes each has read."""
    measured = [t for t in tasks if t.busy_source is not None]
    if not measured:
        return None
    weights = [max(t.bytes_done, 1) for t in measured]
    total = sum(weights)

    def share(key: str) -> float:
        pairs = zip(measured, weights, strict=True)
        return sum((getattr(t, f"busy_{key}") or 0.0) * w for t, w in pairs) / total

    values = {key: share(key) for key, _ in STAGES}
    shares = tuple(Share(key, label, round(values[key] * 100)) for key, label in STAGES)
    return Busy(shares, max(values, key=lambda key: values[key]))


@dataclass(frozen=True)
class Step:
    """One phase of a VM's backup, in order: snapshot, transfer, commit, (verify,) cleanup."""

    key: str
    label: str
    state: str  # "done", "running", "failed", "pending"
    note: str = ""


@dataclass
class DiskNode:
    task: RunTask
    progress: Progress
    busy: Busy | None
    full_read: str  # why the disk was read in full, or ""


@dataclass
class VMNode:
    task: RunTask
    progress: Progress
    disks: list[DiskNode] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    phase: str = ""  # the phase now running
    waiting: str = ""  # why a VM that has not started yet is waiting


def _step_state(state: str) -> str:
    if state in _DONE:
        return "done"
    if state in _BROKEN:
        return "failed"
    if state == TaskState.RUNNING:
        return "running"
    return "pending"


def _transfer_state(disks: list[RunTask]) -> str:
    read = [d for d in disks if d.state != TaskState.SKIPPED]
    if any(d.state == TaskState.RUNNING for d in read):
        return "running"
    if read and all(d.state in _DONE for d in read):
        return "done"
    if any(d.state in _BROKEN for d in read):
        return "failed"
    return "pending"


def _steps(phases: dict[str, RunTask], disks: list[RunTask]) -> list[Step]:
    steps = []
    for key in (Phase.SNAPSHOT, Phase.TRANSFER, Phase.COMMIT, Phase.VERIFY, Phase.CLEANUP):
        task = phases.get(key)
        if key == Phase.TRANSFER and task is None:
            steps.append(Step(key, Phase(key).label, _transfer_state(disks)))
        elif task is not None:
            steps.append(Step(key, task.name, _step_state(task.state), task.message))
        elif key != Phase.VERIFY:  # verify appears only when the policy asks for it
            steps.append(Step(key, Phase(key).label, "pending"))
    return steps


def _full_read(task: RunTask) -> str:
    if task.state in (TaskState.SKIPPED, TaskState.PENDING) or task.message == CHANGED_ONLY_NOTE:
        return ""
    return task.message


def build_tree(tasks: Iterable[RunTask], *, active: bool) -> list[VMNode]:
    """The run's task tree (run → VM → disks and phases) from its tasks in position order."""
    tasks = list(tasks)
    children: dict[int, list[RunTask]] = {}
    for task in tasks:
        if task.parent_id is not None:
            children.setdefault(task.parent_id, []).append(task)
    nodes = []
    for vm in (t for t in tasks if t.kind == TaskKind.VM):
        kids = children.get(vm.pk, [])
        disks = [t for t in kids if t.kind == TaskKind.DISK]
        phases = {t.phase: t for t in kids if t.kind == TaskKind.PHASE}
        vm_active = active and vm.state in (TaskState.PENDING, TaskState.RUNNING)
        node = VMNode(vm, task_progress(disks, active=vm_active))
        node.disks = [
            DiskNode(
                d,
                task_progress([d], active=vm_active),
                busy_of([d]),
                _full_read(d),
            )
            for d in disks
        ]
        node.steps = _steps(phases, disks)
        if vm.state == TaskState.RUNNING:
            node.phase = next((s.label for s in node.steps if s.state == "running"), "")
        elif vm.state == TaskState.PENDING and active:
            node.waiting = vm.message
        nodes.append(node)
    return nodes
