from __future__ import annotations

from celery import shared_task

from inventory.adapters import get_connector
from inventory.models import Connection
from inventory.services import record_sync_failure
from inventory.sync import apply_inventory


@shared_task
def sync_connection(connection_pk: int) -> dict[str, int]:
    connection = Connection.objects.get(pk=connection_pk)
    connector = get_connector(connection.kind)
    try:
        if connector is None:
            raise LookupError(f"no connector for {connection.get_kind_display()} yet")
        result = apply_inventory(connection, connector.discover(connection), acting_user=None)
    except Exception as exc:
        # Recorded so the console shows why the sync it queued did not finish.
        record_sync_failure(connection, str(exc) or type(exc).__name__)
        raise
    return dict(result.__dict__)


@shared_task
def sync_all() -> int:
    """Periodic: keep every connection's inventory fresh (new VMs join dynamic policies)."""
    count = 0
    for connection in Connection.objects.all():
        if get_connector(connection.kind) is not None:
            sync_connection.delay(connection.pk)
            count += 1
    return count
