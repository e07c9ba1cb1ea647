"""Usage figures of repositories, from their restore points, in one query for a whole list.

One definition for the console and the API.

The ratios come from the figures each backup recorded in its manifest:

* logical: the size of the disks the points restore;
* unique: the uncompressed size of the chunks a point was the first to write (dedup leaves only
  these);
* stored: the bytes those chunks and indexes took in the repository (after compression and
  encryption).

So dedup = logical / unique, compression = unique / stored, and the two multiply to the whole
reduction, logical / stored. Points pruned since no longer count, so the figures describe the
points the repository holds now (chunks they still share with a pruned point are counted for
that point, which makes the dedup ratio a slight overestimate after a prune until the next GC).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Count, Max, Q, QuerySet, Sum

from storage.choices import RestorePointState
from storage.models import Repository


def _annotations() -> dict[str, Any]:
    return {
        "point_count": Count("restore_points"),
        "corrupt_count": Count(
            "restore_points", filter=Q(restore_points__state=RestorePointState.CORRUPT)
        ),
        "logical_total": Sum("restore_points__logical_bytes"),
        "unique_total": Sum("restore_points__new_unique_bytes"),
        "stored_total": Sum("restore_points__stored_bytes"),
        "last_verified_at": Max("restore_points__verified_at"),
    }


def with_usage(queryset: QuerySet[Repository]) -> QuerySet[Repository]:
    """``queryset`` annotated with its restore points' totals (one grouped query). Restrict
    first, then annotate: a filter across restore points after this would skew the sums."""
    return queryset.annotate(**_annotations())


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if numerator and denominator else None


@dataclass(frozen=True)
class RepositoryUsage:
    repository: Repository
    points: int
    corrupt: int
    logical_bytes: int
    unique_bytes: int
    stored_bytes: int
    last_verified_at: datetime | None

    @property
    def dedup_ratio(self) -> float | None:
        return _ratio(self.logical_bytes, self.unique_bytes)

    @property
    def compression_ratio(self) -> float | None:
        return _ratio(self.unique_bytes, self.stored_bytes)

    @property
    def used_percent(self) -> int | None:
        """Share of the volume used, once measured (by a GC) and if the volume size is known."""
        capacity = self.repository.capacity_bytes
        if not capacity or self.repository.usage_updated_at is None:
            return None
        return min(100, round(100 * self.repository.used_bytes / capacity))


def usage_of(repositories: Iterable[Repository]) -> list[RepositoryUsage]:
    """The figures of repositories fetched through ``with_usage``."""
    return [
        RepositoryUsage(
            repository=repository,
            points=getattr(repository, "point_count", 0),
            corrupt=getattr(repository, "corrupt_count", 0),
            logical_bytes=getattr(repository, "logical_total", None) or 0,
            unique_bytes=getattr(repository, "unique_total", None) or 0,
            stored_bytes=getattr(repository, "stored_total", None) or 0,
            last_verified_at=getattr(repository, "last_verified_at", None),
        )
        for repository in repositories
    ]


def usage_for(repository: Repository) -> RepositoryUsage:
    """The figures of one repository: from ``with_usage``'s annotations when it came through
    it (a list, a detail), else queried (one just created, which may have attached points)."""
    if not hasattr(repository, "point_count"):
        annotated = with_usage(Repository.objects.filter(pk=repository.pk)).get()
        for name in _annotations():  # kept on the instance: asked again, no second query
            setattr(repository, name, getattr(annotated, name))
    return usage_of([repository])[0]
