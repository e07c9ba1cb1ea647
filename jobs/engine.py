"""The run engine: turns a queued run into its task tree and drives it to a result.

Each state change is written first and then published, so a client that reloads sees exactly
what the live view showed. Backing up a VM is the connector's work (inventory.adapters); a VM
whose hypervisor kind has no connector yet fails with that reason rather than being skipped.
"""

from __future__ import annotations

from collections.abc import Callable

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from inventory.adapters import get_connector
from inventory.models import Proxy, VirtualMachine
from jobs import slots
from jobs.backup import back_up_vm
from jobs.choices import LogLevel, RunResult, RunState, TaskKind, TaskState
from jobs.models import JobRun, ProtectionPolicy, RunTask
from jobs.progress import publish_run
from jobs.retry import with_retries
from jobs.runstate import begin, cancelled, finish, log, set_state
from jobs.selection import resolve_selection
from jobs.services import refresh_members
from storage.engine.repository import Repository as EngineRepository
from storage.engine.writer import Cancelled
from storage.engine_access import open_repository


def _build_tree(run: JobRun, vms: list[VirtualMachine]) -> list[RunTask]:
    vm_tasks = []
    for position, vm in enumerate(vms):
        vm_task = RunTask.objects.create(
            run=run, kind=TaskKind.VM, name=vm.name, vm=vm, position=position
        )
        vm_tasks.append(vm_task)
        for disk_position, disk in enumerate(vm.disks.all()):
            RunTask.objects.create(
                run=run,
                parent=vm_task,
                kind=TaskKind.DISK,
                name=disk.label or disk.device_key,
                vm=vm,
                disk=disk,
                position=disk_position,
                state=TaskState.SKIPPED if disk.excluded else TaskState.PENDING,
                message=disk.excluded_reason,
                bytes_total=0 if disk.excluded else disk.capacity_bytes,
            )
    return vm_tasks


def _back_up_vm(run: JobRun, task: RunTask, engine: Callable[[], EngineRepository | None]) -> None:
    vm = task.vm
    assert vm is not None
    connector = get_connector(vm.connection.kind)  # the task is RUNNING: slots.acquire
    reason = ""
    if connector is None:
        reason = f"No connector for {vm.connection.get_kind_display()} is available yet."
    elif (repository := engine()) is None:
        reason = "The repository cannot be opened."
    else:

        def retrying(attempt: int, exc: BaseException, delay: float) -> None:
            log(
                run,
                f"{vm.name}: {exc}; trying again in {delay:g} s (attempt {attempt + 1}).",
                level=LogLevel.WARNING,
                task=task,
            )

        try:
            point = with_retries(
                lambda: back_up_vm(run, task, connector, repository), on_retry=retrying
            )
        except Cancelled:
            reason = "Cancelled by a user."
            task.state = TaskState.CANCELLED
        except Exception as exc:  # a VM's failure is reported; the run goes on with the next
            reason = f"{type(exc).__name__}: {exc}"
        else:
            task.state, task.message = TaskState.SUCCEEDED, f"Restore point {point.point_id}"
            left_out = task.children.filter(state=TaskState.SKIPPED).count()
            if left_out:  # backed up, but not all of it: a warning, not a failure
                task.state = TaskState.WARNING
                task.message += f" ({left_out} disk(s) left out, see the disks)"
    if reason:
        if task.state != TaskState.CANCELLED:
            task.state = TaskState.FAILED
        task.message = reason
        task.children.filter(state=TaskState.PENDING).update(state=TaskState.CANCELLED)
        task.children.filter(state=TaskState.RUNNING).update(state=task.state)
        log(run, f"{vm.name}: {reason}", level=LogLevel.ERROR, task=task)
    task.finished_at = timezone.now()
    task.save(update_fields=["state", "message", "finished_at"])
    publish_run(run.pk)


def _repository_opener(run: JobRun) -> Callable[[], EngineRepository | None]:
    """Opens the policy's repository on first use (once), logging why when it cannot."""
    opened: list[EngineRepository | None] = []

    def get() -> EngineRepository | None:
        if not opened:
            assert run.policy is not None
            try:
                opened.append(open_repository(run.policy.repository))
            except Exception as exc:
                log(run, f"Repository {run.policy.repository}: {exc}", level=LogLevel.ERROR)
                opened.append(None)
        return opened[0]

    return get


def execute_run(run_pk: int, *, proxy: Proxy | None = None) -> None:
    run = begin(run_pk, proxy)
    if run is None:
        return
    policy = run.policy
    if policy is None:
        with transaction.atomic():
            finish(run, RunResult.FAILED, "The run's policy was deleted before it started.")
        return
    requester = run.requested_by
    if requester is not None and not (
        ProtectionPolicy.objects.restrict(requester, "run").filter(pk=policy.pk).exists()
    ):
        # The same check the API made, again: access may have been withdrawn since.
        with transaction.atomic():
            finish(run, RunResult.FAILED, f"{requester} may no longer run this policy.")
        return
    with transaction.atomic():
        refresh_members(policy)
        vms = list(resolve_selection(policy).select_related("connection"))
        if run.options.get("vms"):  # "back up this VM now"
            vms = list(VirtualMachine.objects.filter(pk__in=run.options["vms"], present=True))
        if not vms:
            finish(run, RunResult.WARNING, "No virtual machine matched the policy's selection.")
            return
        tasks = _build_tree(run, vms)
        log(run, f"{len(vms)} virtual machine(s) selected.")
        set_state(run, RunState.WORKING)
    dispatch_vm_tasks(run, tasks)


def dispatch_vm_tasks(run: JobRun, tasks: list[RunTask]) -> None:
    """Each VM goes to a live proxy that reaches its host; without one, it runs right here."""
    from jobs.dispatch import choose_proxy_for_vm
    from jobs.tasks import back_up_vm_task

    for task in tasks:
        assert task.vm is not None
        proxy = choose_proxy_for_vm(task.vm)
        if proxy is None:
            run_vm_task(run.pk, task.pk, proxy=None)
        else:
            # Assigned now, so the next VM's choice counts it against this proxy's slots.
            RunTask.objects.filter(pk=task.pk).update(proxy=proxy)
            back_up_vm_task.apply_async(args=[run.pk, task.pk], queue=proxy.queue)


def run_vm_task(run_pk: int, task_pk: int, *, proxy: Proxy | None) -> None:
    with transaction.atomic():
        task = RunTask.objects.select_for_update().get(pk=task_pk)
        if task.state != TaskState.PENDING:
            return  # delivered twice, or already failed by the reaper
        task.proxy = proxy
        task.save(update_fields=["proxy"])
    run = JobRun.objects.select_related("policy__repository").get(pk=run_pk)
    if cancelled(run) or not slots.acquire(run, task):
        RunTask.objects.filter(Q(pk=task_pk) | Q(parent_id=task_pk)).update(
            state=TaskState.CANCELLED
        )
    else:
        _back_up_vm(run, task, _repository_opener(run))
    complete_if_done(run_pk)


def complete_if_done(run_pk: int) -> None:
    """Called as each VM ends; the last one post-processes and finishes the run."""
    with transaction.atomic():
        run = JobRun.objects.select_for_update().get(pk=run_pk)
        if run.state not in (RunState.WORKING, RunState.WAITING_REPOSITORY):
            return
        vm_tasks = run.tasks.filter(kind=TaskKind.VM)
        if vm_tasks.filter(state__in=[TaskState.PENDING, TaskState.RUNNING]).exists():
            return
        states = list(vm_tasks.values_list("state", flat=True))
        if run.cancel_requested:
            finish(run, RunResult.CANCELLED, "Cancelled by a user.")
            return
        set_state(run, RunState.POST_PROCESSING)
    failed = states.count(TaskState.FAILED)
    if failed < len(states):
        _post_process(run)
    first = vm_tasks.filter(state=TaskState.FAILED).first()
    why = f" First: {first.name}: {first.message}" if first else ""
    with transaction.atomic():
        if failed == len(states):
            finish(run, RunResult.FAILED, f"All {failed} virtual machine(s) failed.{why}")
        elif failed:
            finish(
                run, RunResult.WARNING, f"{failed} of {len(states)} virtual machine(s) failed.{why}"
            )
        elif TaskState.WARNING in states:
            warned = states.count(TaskState.WARNING)
            finish(
                run,
                RunResult.WARNING,
                f"{len(states)} virtual machine(s) backed up; {warned} with disks left out.",
            )
        else:
            finish(run, RunResult.SUCCEEDED, f"{len(states)} virtual machine(s) backed up.")


def _post_process(run: JobRun) -> None:
    """Retention after a successful backup, then the secondary copy: visible, as phases."""
    from storage import maintenance

    assert run.policy is not None
    try:
        maintenance.prune_policy(run, run.policy)
        if run.policy.copy_repository_id:
            maintenance.copy_new_points(run, run.policy)
    except Exception as exc:
        log(run, f"Post-processing: {type(exc).__name__}: {exc}", level=LogLevel.WARNING)
