"""Retention: which restore points a prune keeps and which it removes.

``compute_prune`` is a pure function in the style of Proxmox Backup Server's
``compute_prune_info`` and restic's ``forget`` policy. It reads nothing and deletes nothing; the
caller (prune, or a UI "what would be deleted" preview via ``preview``) acts on the decisions.

Semantics
---------

* **Order.** Points are considered newest first, by ``(time, id)`` descending: of two points
  taken at the same instant, the one with the greater id counts as the newer. Times must be
  aware; instants are compared, not wall clocks. The output lists every input point exactly
  once, in that order.
* **keep_last N** keeps the N newest points (reason ``"last 1"`` for the newest, ``"last 2"``
  for the next, ...).
* **GFS rules** (``keep_daily``, ``keep_weekly``, ``keep_monthly``, ``keep_yearly``): each rule
  walks the points newest to oldest and keeps the newest point of each period until it has kept
  N distinct periods. Periods without points do not count. Periods are computed from the point's
  time converted to ``RetentionPolicy.timezone``: a day is the local calendar date
  (``"2026-11-24"``), a week is the ISO year and week (``"2020-W53"``, so 2020-12-31 and
  2021-01-01 share a week), a month ``"2026-11"``, a year ``"2026"``. A point taken at 23:30 UTC
  belongs to the next day in Asia/Tokyo.
* **Rules are independent.** Every rule counts its periods over all points, so a period counts
  towards a rule's N even when its newest point was already kept by an earlier rule (restic's
  behaviour). A point may be kept by several rules; all of its reasons are listed, in the order
  last, daily, weekly, monthly, yearly (``("last 1", "daily 2026-11-24", "weekly 2026-W48")``).
  Consequently at most ``keep_last + keep_daily + keep_weekly + keep_monthly + keep_yearly``
  points are marked KEEP, and pruning the surviving points again with the same policy and the
  same ``now`` removes nothing (the decisions are identical).
* **Protected** points are always kept (``Mark.PROTECTED``) and are invisible to the rules: they
  take no keep_last slot and do not stand for their period; the newest unprotected point of that
  period does.
* **Immutable** points (``immutable_until > now``; a retention date equal to ``now`` has
  expired) are never removed. They take part in the rules like any other point: kept by a rule,
  they are marked KEEP with the extra reason ``"immutable until <iso time>"``; otherwise they are
  marked IMMUTABLE.
* **In use** points (a running writer builds on them, or a restore reads them) likewise take part
  in the rules, are never removed, and are marked KEEP with the extra reason ``"in use"`` or
  IN_USE. A point both immutable and in use but not kept by a rule is marked IMMUTABLE, with
  both reasons.
* ``reasons`` says why a point survives; it is empty exactly for REMOVE.
* A policy whose counts are all zero raises ``ValueError("retention keeps nothing")`` rather
  than deleting everything. Negative counts and unknown time zones are refused when the
  ``RetentionPolicy`` is built; naive datetimes and duplicate ids are refused too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum
from typing import TypedDict
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "Decision",
    "Mark",
    "PointInfo",
    "PrunePreview",
    "RetentionPolicy",
    "compute_prune",
    "preview",
]


def _require_aware(value: datetime, what: str) -> None:
    if not isinstance(value, datetime):
        raise TypeError(f"{what} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise ValueError(f"{what} must be an aware datetime (with a time zone), got {value!r}")


@dataclass(frozen=True)
class PointInfo:
    """What retention needs to know about one restore point."""

    id: str  # restore point id
    time: datetime  # aware datetime (when the snapshot was taken)
    protected: bool = False
    immutable_until: datetime | None = None
    in_use: bool = False  # a running writer builds on it, or a restore is reading it

    def __post_init__(self) -> None:
        _require_aware(self.time, f"time of restore point {self.id!r}")
        if self.immutable_until is not None:
            _require_aware(self.immutable_until, f"immutable_until of restore point {self.id!r}")

    def is_immutable(self, now: datetime) -> bool:
        return self.immutable_until is not None and self.immutable_until > now


@dataclass(frozen=True)
class RetentionPolicy:
    """How many points to keep: the N newest, and the newest of the N newest days, weeks, ..."""

    keep_last: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0
    timezone: str = "UTC"  # IANA name; buckets (days, ISO weeks, months, years) use this zone

    def __post_init__(self) -> None:
        for f in fields(self):
            if not f.name.startswith("keep_"):
                continue
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{f.name} must be a whole number, got {value!r}")
            if value < 0:
                raise ValueError(f"{f.name} must not be negative, got {value}")
        self.zone()  # validates the name

    def zone(self) -> ZoneInfo:
        """The policy's time zone; ``ValueError`` when the name is not a known IANA zone."""
        name = self.timezone
        if not isinstance(name, str) or not name:
            raise ValueError(
                f"unknown time zone {name!r}: give an IANA name such as 'Europe/Berlin'"
            )
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
            raise ValueError(
                f"unknown time zone {name!r}: give an IANA name such as 'Europe/Berlin'"
            ) from exc

    @property
    def keeps_nothing(self) -> bool:
        return not (
            self.keep_last
            or self.keep_daily
            or self.keep_weekly
            or self.keep_monthly
            or self.keep_yearly
        )


class Mark(StrEnum):
    KEEP = "keep"
    REMOVE = "remove"
    PROTECTED = "protected"
    IMMUTABLE = "immutable"
    IN_USE = "in-use"


@dataclass(frozen=True)
class Decision:
    point: PointInfo
    mark: Mark
    reasons: tuple[str, ...]  # e.g. ("last 3", "daily 2026-11-24", "weekly 2026-W47")


class PrunePreview(TypedDict):
    """Summary of a prune for a "what would be deleted" preview."""

    total: int
    counts: dict[str, int]  # every Mark value -> how many points got it (0 included)
    remove: list[str]  # ids that would be deleted, newest first


def _day(t: datetime) -> str:
    return t.date().isoformat()


def _week(t: datetime) -> str:
    iso = t.isocalendar()
    return f"{iso.year:04d}-W{iso.week:02d}"


def _month(t: datetime) -> str:
    return f"{t.year:04d}-{t.month:02d}"


def _year(t: datetime) -> str:
    return f"{t.year:04d}"


_Period = Callable[[datetime], str]


def _order(points: Iterable[PointInfo]) -> list[PointInfo]:
    ordered = sorted(points, key=lambda p: (p.time, p.id), reverse=True)
    seen: set[str] = set()
    duplicates: set[str] = set()
    for p in ordered:
        if p.id in seen:
            duplicates.add(p.id)
        seen.add(p.id)
    if duplicates:
        raise ValueError(f"duplicate restore point ids: {', '.join(sorted(duplicates))}")
    return ordered


def compute_prune(
    points: Iterable[PointInfo], policy: RetentionPolicy, *, now: datetime
) -> list[Decision]:
    """Decide for every point whether prune keeps or removes it; see the module docstring."""
    _require_aware(now, "now")
    if policy.keeps_nothing:
        raise ValueError("retention keeps nothing")
    zone = policy.zone()
    ordered = _order(points)

    candidates = [p for p in ordered if not p.protected]
    rule_reasons: dict[str, list[str]] = {p.id: [] for p in candidates}

    for rank, p in enumerate(candidates[: policy.keep_last], start=1):
        rule_reasons[p.id].append(f"last {rank}")

    rules: tuple[tuple[str, int, _Period], ...] = (
        ("daily", policy.keep_daily, _day),
        ("weekly", policy.keep_weekly, _week),
        ("monthly", policy.keep_monthly, _month),
        ("yearly", policy.keep_yearly, _year),
    )
    for name, count, period_of in rules:
        if count == 0:
            continue
        periods: set[str] = set()
        for p in candidates:
            period = period_of(p.time.astimezone(zone))
            if period in periods:
                continue  # an older point of a period already represented
            if len(periods) >= count:
                break
            periods.add(period)
            rule_reasons[p.id].append(f"{name} {period}")

    decisions: list[Decision] = []
    for p in ordered:
        extras: list[str] = []
        until = p.immutable_until
        immutable = until is not None and until > now
        if until is not None and immutable:
            extras.append(f"immutable until {until.isoformat()}")
        if p.in_use:
            extras.append("in use")

        if p.protected:
            mark, reasons = Mark.PROTECTED, ["protected", *extras]
        elif rule_reasons[p.id]:
            mark, reasons = Mark.KEEP, [*rule_reasons[p.id], *extras]
        elif immutable:
            mark, reasons = Mark.IMMUTABLE, extras
        elif p.in_use:
            mark, reasons = Mark.IN_USE, extras
        else:
            mark, reasons = Mark.REMOVE, []
        decisions.append(Decision(point=p, mark=mark, reasons=tuple(reasons)))
    return decisions


def preview(decisions: Iterable[Decision]) -> PrunePreview:
    """Counts per mark and the ids that would be removed, for a "what would be deleted" view."""
    listed = list(decisions)
    tally = Counter(d.mark for d in listed)
    return PrunePreview(
        total=len(listed),
        counts={mark.value: tally[mark] for mark in Mark},
        remove=[d.point.id for d in listed if d.mark is Mark.REMOVE],
    )
