"""Prune a repository: apply the pure retention decisions (storage.engine.prune) to manifests."""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from datetime import datetime

from storage.engine.backend import ObjectLocked
from storage.engine.gc import maintenance_lock
from storage.engine.prune import Decision, Mark, PointInfo, RetentionPolicy, compute_prune
from storage.engine.repository import Repository


def points_of(
    repo: Repository,
    vm_key: str,
    *,
    protected: AbstractSet[str] = frozenset(),
) -> list[PointInfo]:
    in_use = {w["parent"].rsplit("/", 1)[-1] for w in repo.writers() if w.get("parent")}
    return [
        PointInfo(
            id=m.id,
            time=m.created,
            protected=m.id in protected,
            immutable_until=m.immutable_until,
            in_use=m.id in in_use,
        )
        for m in repo.manifests(vm_key)
    ]


def prune_vm(
    repo: Repository,
    vm_key: str,
    policy: RetentionPolicy,
    *,
    now: datetime,
    protected: AbstractSet[str] = frozenset(),
    dry_run: bool = False,
) -> list[Decision]:
    """Delete the manifests retention removes (their data goes at the next GC)."""
    with maintenance_lock(repo, "prune"):
        decisions = compute_prune(points_of(repo, vm_key, protected=protected), policy, now=now)
        if dry_run:
            return decisions
        for decision in decisions:
            if decision.mark != Mark.REMOVE:
                continue
            try:
                repo.backend.delete(f"snapshots/{vm_key}/{decision.point.id}")
            except ObjectLocked:
                continue  # immutable on the backend even if the manifest said otherwise
    return decisions
