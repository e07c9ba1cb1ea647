"""Retention of a policy's restore points: the pure decision (storage.engine.prune) on catalog
rows, for previews, and the same decision applied to the repository by prune runs."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime

from django.utils import timezone

from jobs.models import ProtectionPolicy
from storage.engine.prune import Decision, PointInfo, RetentionPolicy, compute_prune
from storage.engine_access import vm_key_for
from storage.models import RestorePoint


def retention_of(policy: ProtectionPolicy) -> RetentionPolicy:
    schedule = policy.schedules.first()
    return RetentionPolicy(
        keep_last=policy.keep_last,
        keep_daily=policy.keep_daily,
        keep_weekly=policy.keep_weekly,
        keep_monthly=policy.keep_monthly,
        keep_yearly=policy.keep_yearly,
        timezone=schedule.timezone if schedule else "UTC",
    )


def policy_vm_keys(policy: ProtectionPolicy) -> list[str]:
    return sorted({vm_key_for(vm) for vm in policy.members.select_related("connection")})


def preview(policy: ProtectionPolicy, *, now: datetime | None = None) -> dict[str, list[Decision]]:
    """What pruning would keep and remove now, per VM key, from the catalog."""
    return preview_points(
        RestorePoint.objects.filter(
            repository=policy.repository, vm_key__in=policy_vm_keys(policy)
        ),
        retention_of(policy),
        now=now,
    )


def preview_points(
    rows: Iterable[RestorePoint], rules: RetentionPolicy, *, now: datetime | None = None
) -> dict[str, list[Decision]]:
    """The same decision for any catalog rows and rules (the policy form's preview of values
    not saved yet), per VM key."""
    now = now or timezone.now()
    points: dict[str, list[PointInfo]] = defaultdict(list)
    for row in rows:
        points[row.vm_key].append(
            PointInfo(
                id=row.point_id,
                time=row.created_at,
                protected=row.protected,
                immutable_until=row.immutable_until,
            )
        )
    return {key: compute_prune(items, rules, now=now) for key, items in sorted(points.items())}
