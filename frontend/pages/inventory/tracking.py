"""Change-tracking health, from the disks of a VM's restore points.

A disk whose newest restore point carries a change-tracking token can be backed up
incrementally next time; one read in full says why (``full_read_reason``), and a full read of a
disk that had been backed up before means tracking was lost, which users must be able to see.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Subquery

from inventory.models import VirtualDisk, VirtualMachine
from storage.choices import USABLE_POINT_STATES
from storage.models import RestorePoint, RestorePointDisk


@dataclass(frozen=True)
class Health:
    state: str  # "ok", "first", "full", "untracked", "none" or "excluded"
    label: str
    tone: str  # a Bootstrap colour
    detail: str = ""


NO_POINT = Health("none", "No restore point", "secondary", "Not backed up yet.")


def latest_points(vms: Iterable[VirtualMachine], user: Any) -> dict[int, RestorePoint]:
    """The newest usable restore point of each VM (annotated ``with_latest_restore_point``),
    with its disks and whether an older point of the VM exists; two queries at most."""
    ids = [vm.latest_restore_point_id for vm in vms if vm.latest_restore_point_id]  # type: ignore[attr-defined]
    if not ids:
        return {}
    older = RestorePoint.objects.filter(
        vm=OuterRef("vm"), state__in=USABLE_POINT_STATES, created_at__lt=OuterRef("created_at")
    )
    points = (
        RestorePoint.objects.restrict(user, "view")
        .filter(pk__in=ids)
        .annotate(has_older=Exists(older))
        .prefetch_related("disks")
    )
    return {point.vm_id: point for point in points if point.vm_id is not None}


def point_health(point: RestorePoint | None) -> Health:
    """The VM-level badge: the worst state among the disks of its newest restore point."""
    if point is None:
        return NO_POINT
    disks = list(point.disks.all())
    untracked = [d.device_key for d in disks if not d.change_token]
    if untracked:
        return Health(
            "untracked",
            "No change tracking",
            "warning",
            f"{', '.join(untracked)}: no change-tracking token; the next backup reads "
            "them in full.",
        )
    full = [d for d in disks if d.full_read_reason]
    if full and getattr(point, "has_older", False):
        return Health(
            "full",
            "Tracking reset",
            "warning",
            "; ".join(f"{d.device_key}: {d.full_read_reason}" for d in full),
        )
    if full:
        return Health("first", "First full backup", "info", "Incremental from the next backup.")
    return Health("ok", "Tracking", "success", "Every disk has a change-tracking token.")


def disks_with_tracking(vm: VirtualMachine) -> QuerySet[VirtualDisk]:
    """The VM's disks, each annotated with its last full read (time and reason) and the number
    of usable restore points holding it."""
    entries = RestorePointDisk.objects.filter(
        restore_point__vm=OuterRef("vm"),
        restore_point__state__in=USABLE_POINT_STATES,
        device_key=OuterRef("device_key"),
    )
    full_reads = entries.exclude(full_read_reason="").order_by(
        "-restore_point__created_at", "-restore_point_id"
    )
    counted = entries.order_by().values("device_key").annotate(n=Count("pk")).values("n")
    return (
        VirtualDisk.objects.filter(vm=vm)
        .select_related("datastore")
        .annotate(
            last_full_read_at=Subquery(full_reads.values("restore_point__created_at")[:1]),
            last_full_read_reason=Subquery(full_reads.values("full_read_reason")[:1]),
            backed_up_count=Subquery(counted[:1]),
        )
    )


def disk_health(disk: VirtualDisk, point: RestorePoint | None) -> Health:
    """One disk's state, given the VM's newest usable restore point (disks prefetched)."""
    if disk.excluded:
        return Health("excluded", "Excluded", "secondary", disk.excluded_reason)
    entry = None
    if point is not None:
        entry = next((d for d in point.disks.all() if d.device_key == disk.device_key), None)
    if entry is None:
        return NO_POINT
    if not entry.change_token:
        return Health(
            "untracked",
            "No change tracking",
            "warning",
            "The newest restore point has no change-tracking token; the next backup reads "
            "this disk in full.",
        )
    if entry.full_read_reason and (getattr(disk, "backed_up_count", 0) or 0) > 1:
        return Health(
            "full",
            "Tracking reset",
            "warning",
            "Read in full in the newest restore point; tracking again from there.",
        )
    if entry.full_read_reason:
        return Health("first", "First full backup", "info", "Incremental from the next backup.")
    return Health("ok", "Tracking", "success", "Read incrementally in the newest restore point.")


def with_read_kind(points: QuerySet[RestorePoint]) -> QuerySet[RestorePoint]:
    """Annotates how many disks each point holds and how many of them were read in full."""
    return points.annotate(
        disk_count=Count("disks", distinct=True),
        full_disk_count=Count("disks", filter=~Q(disks__full_read_reason=""), distinct=True),
    )


def read_kind(point: RestorePoint) -> str:
    """ "full" when every disk was read in full, "incremental" when none was, else "mixed"."""
    full = getattr(point, "full_disk_count", 0)
    if full == 0:
        return "incremental"
    return "full" if full >= getattr(point, "disk_count", 0) else "mixed"
