"""Domain actions on protection policies and runs."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from backupconsole import audit
from backupconsole.errors import ActionRefused
from inventory.models import VirtualMachine
from jobs.choices import RunResult, RunState, Trigger
from jobs.models import JobRun, ProtectionPolicy, Schedule, SelectionRule
from jobs.selection import resolve_selection

POLICY_FIELDS = (
    "name",
    "description",
    "enabled",
    "repository",
    "copy_repository",
    "keep_last",
    "keep_daily",
    "keep_weekly",
    "keep_monthly",
    "keep_yearly",
    "rpo_hours",
    "options",
)
RETENTION_FIELDS = ("keep_last", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")


def check_retention(values: dict[str, int]) -> None:
    if not any(values.get(name, 0) for name in RETENTION_FIELDS):
        raise ActionRefused(
            "Retention keeps no restore point: set keep_last or a daily, weekly, monthly or "
            "yearly count of at least 1.",
            field="keep_last",
        )


def check_copy_target(repository: Any, copy_repository: Any) -> None:
    if copy_repository is not None and copy_repository == repository:
        raise ActionRefused(
            "A secondary copy must go to another repository.", field="copy_repository"
        )


def _policy_snapshot(policy: ProtectionPolicy) -> dict[str, Any]:
    data = audit.snapshot(policy)
    data["rules"] = [
        {"kind": r.kind, "value": r.value, "exclude": r.exclude} for r in policy.rules.all()
    ]
    data["schedules"] = [
        {"cron": s.cron, "timezone": s.timezone, "enabled": s.enabled}
        for s in policy.schedules.all()
    ]
    return data


def _write_children(
    policy: ProtectionPolicy,
    *,
    vms: list[VirtualMachine] | None,
    excluded_vms: list[VirtualMachine] | None,
    rules: list[dict[str, Any]] | None,
    schedules: list[dict[str, Any]] | None,
) -> None:
    if vms is not None:
        policy.vms.set(vms)
    if excluded_vms is not None:
        policy.excluded_vms.set(excluded_vms)
    if rules is not None:
        policy.rules.all().delete()
        SelectionRule.objects.bulk_create(SelectionRule(policy=policy, **r) for r in rules)
    if schedules is not None:
        kept = {(s.cron, s.timezone): s for s in policy.schedules.all()}
        policy.schedules.all().delete()
        now = timezone.now()
        Schedule.objects.bulk_create(
            Schedule(
                policy=policy,
                # An unchanged schedule keeps its last firing, so editing a policy never
                # fires (or skips) a backup by itself.
                last_fired_at=getattr(kept.get((s["cron"], s["timezone"])), "last_fired_at", now),
                **s,
            )
            for s in schedules
        )


def refresh_members(policy: ProtectionPolicy) -> None:
    policy.members.set(resolve_selection(policy))


def refresh_all_members() -> None:
    """After an inventory change: recompute which policies protect which VMs."""
    for policy in ProtectionPolicy.objects.all():
        refresh_members(policy)


def create_policy(
    *,
    data: dict[str, Any],
    vms: list[VirtualMachine],
    excluded_vms: list[VirtualMachine],
    rules: list[dict[str, Any]],
    schedules: list[dict[str, Any]],
    acting_user: Any,
) -> ProtectionPolicy:
    defaults = ProtectionPolicy()
    check_retention({name: data.get(name, getattr(defaults, name)) for name in RETENTION_FIELDS})
    check_copy_target(data.get("repository"), data.get("copy_repository"))
    with transaction.atomic():
        policy = ProtectionPolicy.objects.create(
            **{k: v for k, v in data.items() if k in POLICY_FIELDS}
        )
        _write_children(
            policy, vms=vms, excluded_vms=excluded_vms, rules=rules, schedules=schedules
        )
        refresh_members(policy)
        audit.record(
            "jobs.policy.create", policy, acting_user=acting_user, after=_policy_snapshot(policy)
        )
    return policy


def update_policy(
    policy: ProtectionPolicy,
    *,
    data: dict[str, Any],
    vms: list[VirtualMachine] | None = None,
    excluded_vms: list[VirtualMachine] | None = None,
    rules: list[dict[str, Any]] | None = None,
    schedules: list[dict[str, Any]] | None = None,
    acting_user: Any,
) -> ProtectionPolicy:
    with transaction.atomic():
        policy = ProtectionPolicy.objects.select_for_update().get(pk=policy.pk)
        before = _policy_snapshot(policy)
        for name in POLICY_FIELDS:
            if name in data:
                setattr(policy, name, data[name])
        check_retention({name: getattr(policy, name) for name in RETENTION_FIELDS})
        check_copy_target(policy.repository, policy.copy_repository)
        policy.save()
        _write_children(
            policy, vms=vms, excluded_vms=excluded_vms, rules=rules, schedules=schedules
        )
        refresh_members(policy)
        audit.record(
            "jobs.policy.update",
            policy,
            acting_user=acting_user,
            before=before,
            after=_policy_snapshot(policy),
        )
    return policy


def set_policy_enabled(
    policy: ProtectionPolicy, *, enabled: bool, acting_user: Any
) -> ProtectionPolicy:
    return update_policy(policy, data={"enabled": enabled}, acting_user=acting_user)


def delete_policy(policy: ProtectionPolicy, *, acting_user: Any) -> None:
    if policy.runs.exclude(state=RunState.FINISHED).exists():
        raise ActionRefused("The policy has a run in progress; cancel it or wait for it to end.")
    with transaction.atomic():
        audit.record(
            "jobs.policy.delete", policy, acting_user=acting_user, before=_policy_snapshot(policy)
        )
        policy.delete()


def start_run(policy: ProtectionPolicy, *, trigger: str, acting_user: Any) -> JobRun:
    """Create the run row, then enqueue it once the transaction has committed."""
    from jobs.dispatch import enqueue_run

    if trigger == Trigger.SCHEDULE and not policy.enabled:
        raise ActionRefused("The policy is disabled.")
    with transaction.atomic():
        # One run per policy at a time; the lock makes two simultaneous "run now" clicks safe.
        ProtectionPolicy.objects.select_for_update().filter(pk=policy.pk).first()
        active = policy.runs.exclude(state=RunState.FINISHED).first()
        if active is not None:
            raise ActionRefused(
                f"The policy is already running (run #{active.pk}, {active.state})."
            )
        run = JobRun.objects.create(
            policy=policy,
            trigger=trigger,
            requested_by=acting_user if getattr(acting_user, "is_authenticated", False) else None,
        )
        audit.record("jobs.run.start", run, acting_user=acting_user, after=audit.snapshot(run))
        transaction.on_commit(lambda: enqueue_run(run.pk))
    return run


def start_vm_backup(
    vm: VirtualMachine,
    *,
    policy: ProtectionPolicy | None,
    trigger: str,
    acting_user: Any,
) -> JobRun:
    """Back up one VM now, with a policy's repository, options and retention."""
    from jobs.dispatch import enqueue_run

    if policy is None:
        policy = vm.protecting_policies.order_by("name").first()
        if policy is None:
            raise ActionRefused(
                "The VM is not protected by any policy: choose one (its repository and "
                "retention apply).",
                field="policy",
            )
    with transaction.atomic():
        ProtectionPolicy.objects.select_for_update().filter(pk=policy.pk).first()
        active = policy.runs.exclude(state=RunState.FINISHED).first()
        if active is not None:
            raise ActionRefused(f"The policy is already running (run #{active.pk}).")
        run = JobRun.objects.create(
            policy=policy,
            trigger=trigger,
            options={"vms": [vm.pk]},
            requested_by=acting_user if getattr(acting_user, "is_authenticated", False) else None,
        )
        audit.record("jobs.run.start", run, acting_user=acting_user, after={"vm": vm.pk})
        transaction.on_commit(lambda: enqueue_run(run.pk))
    return run


def cancel_run(run: JobRun, *, acting_user: Any) -> JobRun:
    """Ask a run to stop. A queued run ends at once; a working run stops at its next step."""
    from jobs.progress import publish_run

    with transaction.atomic():
        run = JobRun.objects.select_for_update().get(pk=run.pk)
        if run.state == RunState.FINISHED:
            raise ActionRefused(f"Run #{run.pk} has already finished ({run.result}).")
        before = {"state": run.state, "cancel_requested": run.cancel_requested}
        run.cancel_requested = True
        if run.state == RunState.QUEUED:
            run.state = RunState.FINISHED
            run.result = RunResult.CANCELLED
            run.reason = "Cancelled before it started."
            run.finished_at = timezone.now()
        run.save()
        audit.record(
            "jobs.run.cancel",
            run,
            acting_user=acting_user,
            before=before,
            after={"state": run.state, "cancel_requested": True},
        )
        transaction.on_commit(lambda: publish_run(run.pk))
    return run
