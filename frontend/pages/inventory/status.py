"""A connection's sync state, read from the audit trail the sync actions write.

``request_sync`` records a request, the sync records ``last_synced_at`` when it applies the
inventory, and the task records a failure; the newest of the three says where a sync stands.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import CharField, OuterRef, QuerySet, Subquery
from django.db.models.fields.json import KT
from django.db.models.functions import Cast
from django.utils import timezone

from backupconsole.models import AuditEvent
from inventory.models import Connection
from inventory.services import SYNC_FAILED, SYNC_REQUESTED

# A requested sync with no outcome after this long is reported as stuck (no worker, most likely)
# and the page stops polling for it.
SYNC_STALE_AFTER = timedelta(minutes=10)


def with_sync_status(queryset: QuerySet[Connection]) -> QuerySet[Connection]:
    """Annotates the newest sync request and failure (time and message) of each connection."""
    events = AuditEvent.objects.filter(
        object_type__app_label="inventory",
        object_type__model="connection",
        object_id=Cast(OuterRef("pk"), CharField()),
    ).order_by("-time", "-id")
    failures = events.filter(action=SYNC_FAILED)
    return queryset.annotate(
        sync_requested_at=Subquery(events.filter(action=SYNC_REQUESTED).values("time")[:1]),
        sync_failed_at=Subquery(failures.values("time")[:1]),
        sync_failed_message=Subquery(
            failures.annotate(message=KT("after__message")).values("message")[:1]
        ),
    )


@dataclass(frozen=True)
class SyncStatus:
    state: str  # "never", "queued", "stuck", "failed" or "synced"
    at: datetime | None
    message: str = ""

    @property
    def pending(self) -> bool:
        """Still waiting for an outcome: the page polls while this holds."""
        return self.state == "queued"


def sync_status(connection: Any, *, now: datetime | None = None) -> SyncStatus:
    """The state of ``connection`` (annotated by ``with_sync_status``)."""
    now = now or timezone.now()
    synced: datetime | None = connection.last_synced_at
    requested: datetime | None = getattr(connection, "sync_requested_at", None)
    failed: datetime | None = getattr(connection, "sync_failed_at", None)
    outcome = max((t for t in (synced, failed) if t is not None), default=None)
    if requested is not None and (outcome is None or requested > outcome):
        if now - requested > SYNC_STALE_AFTER:
            return SyncStatus(
                "stuck",
                requested,
                "No worker has run the sync requested then; check that the console worker "
                "is running.",
            )
        return SyncStatus("queued", requested)
    if failed is not None and (synced is None or failed > synced):
        return SyncStatus("failed", failed, getattr(connection, "sync_failed_message", "") or "")
    if synced is not None:
        return SyncStatus("synced", synced)
    return SyncStatus("never", None)
