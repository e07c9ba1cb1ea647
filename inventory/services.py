"""Domain actions on connections and proxies. Views, the API, commands and tasks call these."""

from __future__ import annotations

import dataclasses
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from backupconsole import audit
from backupconsole.errors import ActionRefused
from inventory.adapters import get_connector
from inventory.choices import DEFAULT_PORTS, TLS_KINDS, ConnectionKind
from inventory.models import Connection, Proxy, VirtualMachine
from inventory.probe import ProbeResult, normalize_fingerprint, probe

CONNECTION_FIELDS = ("name", "kind", "address", "port", "username", "verify_tls", "tls_fingerprint")


def probe_connection(connection: Connection) -> ProbeResult:
    return probe(
        connection.kind,
        connection.address,
        connection.port or DEFAULT_PORTS[ConnectionKind(connection.kind)],
        verify_tls=connection.verify_tls,
        pinned_fingerprint=connection.tls_fingerprint,
        timeout=settings.CONNECTION_TEST_TIMEOUT_SECONDS,
    )


def _apply(connection: Connection, data: dict[str, Any], secret: str | None) -> None:
    for name in CONNECTION_FIELDS:
        if name in data:
            setattr(connection, name, data[name])
    if connection.tls_fingerprint:
        connection.tls_fingerprint = normalize_fingerprint(connection.tls_fingerprint)
        if ConnectionKind(connection.kind) not in TLS_KINDS:
            raise ActionRefused(
                "This kind of connection does not use TLS; leave the fingerprint empty.",
                field="tls_fingerprint",
            )
    if secret is not None:
        connection.set_secret(secret)


def _check_reachable(connection: Connection) -> ProbeResult:
    result = probe_connection(connection)
    if not result.ok:
        raise ActionRefused(f"Connection test failed: {result.message}", field="address")
    return result


def _record_test(connection: Connection, result: ProbeResult) -> None:
    connection.last_tested_at = timezone.now()
    connection.last_test_ok = result.ok
    connection.last_test_message = result.message[:500]


def create_connection(
    *, data: dict[str, Any], secret: str, acting_user: Any, test: bool = True
) -> Connection:
    """Create a connection; with ``test``, only once the endpoint answered (nothing saved half).
    A first inventory sync is queued once it is saved, so its VMs appear without waiting for the
    periodic sync."""
    connection = Connection()
    _apply(connection, data, secret)
    if not connection.port:
        connection.port = DEFAULT_PORTS[ConnectionKind(connection.kind)]
    if test:
        _record_test(connection, _check_reachable(connection))
    with transaction.atomic():
        connection.save()
        audit.record(
            "inventory.connection.create",
            connection,
            acting_user=acting_user,
            after=audit.snapshot(connection),
        )
        if get_connector(connection.kind) is not None:  # as sync_all: kinds with a connector
            request_sync(connection, acting_user=acting_user)
    return connection


def update_connection(
    connection: Connection,
    *,
    data: dict[str, Any],
    secret: str | None,
    acting_user: Any,
    test: bool = True,
) -> Connection:
    before = audit.snapshot(connection)
    _apply(connection, data, secret)
    endpoint_changed = any(
        before.get(name) != getattr(connection, name)
        for name in ("kind", "address", "port", "verify_tls", "tls_fingerprint")
    )
    if test and (endpoint_changed or secret is not None):
        _record_test(connection, _check_reachable(connection))
    with transaction.atomic():
        connection.save()
        audit.record(
            "inventory.connection.update",
            connection,
            acting_user=acting_user,
            before=before,
            after=audit.snapshot(connection),
        )
    return connection


def delete_connection(connection: Connection, *, acting_user: Any) -> None:
    from storage.models import RestorePoint

    if RestorePoint.objects.filter(vm__connection=connection).exists():
        raise ActionRefused(
            "Virtual machines of this connection have restore points. Delete or move those "
            "restore points first; removing the connection would orphan them."
        )
    with transaction.atomic():
        audit.record(
            "inventory.connection.delete",
            connection,
            acting_user=acting_user,
            before=audit.snapshot(connection),
        )
        connection.delete()


def test_connection(connection: Connection, *, acting_user: Any) -> ProbeResult:
    """Probe a saved connection and remember the outcome (shown in the console)."""
    result = probe_connection(connection)
    with transaction.atomic():
        _record_test(connection, result)
        connection.save(update_fields=["last_tested_at", "last_test_ok", "last_test_message"])
        audit.record(
            "inventory.connection.test",
            connection,
            acting_user=acting_user,
            after=dataclasses.asdict(result),
        )
    return result


# Audit actions of an inventory sync requested from the console; with the connection's
# ``last_synced_at`` (written by the sync itself) they tell whether a requested sync is still
# queued or running, or how it failed, without a schema change.
SYNC_REQUESTED = "inventory.connection.sync_request"
SYNC_FAILED = "inventory.connection.sync_failed"


def request_sync(connection: Connection, *, acting_user: Any) -> None:
    """Queue an inventory sync of ``connection`` once the request is recorded."""
    from inventory.tasks import sync_connection

    with transaction.atomic():
        audit.record(SYNC_REQUESTED, connection, acting_user=acting_user)
        transaction.on_commit(lambda: sync_connection.delay(connection.pk))


def record_sync_failure(connection: Connection, message: str) -> None:
    """Called by the sync task when discovery fails, so the console can say why."""
    audit.record(SYNC_FAILED, connection, acting_user=None, after={"message": message[:500]})


def fetch_fingerprint(*, kind: str, address: str, port: int | None = None) -> ProbeResult:
    """First contact: the SHA-256 fingerprint of the endpoint's certificate, for the user to
    compare with what vCenter/ESXi shows and then pin. Nothing is trusted or sent by asking."""
    if ConnectionKind(kind) not in TLS_KINDS:
        raise ActionRefused("This kind of connection does not use TLS.", field="kind")
    return probe(
        kind,
        address,
        port or DEFAULT_PORTS[ConnectionKind(kind)],
        verify_tls=False,
        pinned_fingerprint="",
        timeout=settings.CONNECTION_TEST_TIMEOUT_SECONDS,
    )


VSPHERE_KINDS = frozenset({ConnectionKind.VCENTER, ConnectionKind.ESXI})


@dataclasses.dataclass(frozen=True)
class ResetResult:
    vm: int
    ok: bool
    message: str


def reset_change_tracking(vms: list[VirtualMachine], *, acting_user: Any) -> list[ResetResult]:
    """Reset CBT on the selected vSphere VMs (their next backup reads in full, storing only new
    chunks, and says why). Each VM is audited; one failing does not stop the others."""
    from pyVmomi import vmodl

    from inventory.vmware.cbt import reset_cbt
    from inventory.vmware.session import VSphereError, session_for

    if not vms:
        raise ActionRefused("Select at least one virtual machine.", field="vms")
    others = sorted(vm.name for vm in vms if vm.connection.kind not in VSPHERE_KINDS)
    if others:
        raise ActionRefused(
            f"CBT exists on vSphere VMs only, not on: {', '.join(others)}.", field="vms"
        )
    results = []
    for vm in vms:
        try:
            message, ok = reset_cbt(session_for(vm.connection), vm.external_id, vm.name), True
        except (VSphereError, ConnectionError, vmodl.MethodFault) as exc:
            message, ok = f"CBT reset on {vm.name} failed: {exc}", False
        audit.record(
            "inventory.vm.reset_cbt", vm, acting_user=acting_user, after={"message": message}
        )
        results.append(ResetResult(vm.pk, ok, message))
    return results


PROXY_FIELDS = ("name", "queue", "task_slots", "transports", "enabled")


def create_proxy(
    *, data: dict[str, Any], connections: list[Connection] | None, acting_user: Any
) -> Proxy:
    with transaction.atomic():
        proxy = Proxy.objects.create(**{k: v for k, v in data.items() if k in PROXY_FIELDS})
        if connections is not None:
            proxy.connections.set(connections)
        audit.record(
            "inventory.proxy.create", proxy, acting_user=acting_user, after=audit.snapshot(proxy)
        )
    return proxy


def update_proxy(
    proxy: Proxy,
    *,
    data: dict[str, Any],
    connections: list[Connection] | None,
    acting_user: Any,
) -> Proxy:
    with transaction.atomic():
        before = audit.snapshot(proxy)
        for name in PROXY_FIELDS:
            if name in data:
                setattr(proxy, name, data[name])
        proxy.save()
        if connections is not None:
            proxy.connections.set(connections)
        audit.record(
            "inventory.proxy.update",
            proxy,
            acting_user=acting_user,
            before=before,
            after=audit.snapshot(proxy),
        )
    return proxy


def delete_proxy(proxy: Proxy, *, acting_user: Any) -> None:
    with transaction.atomic():
        audit.record(
            "inventory.proxy.delete", proxy, acting_user=acting_user, before=audit.snapshot(proxy)
        )
        proxy.delete()


def record_heartbeat(*, name: str, queue: str, hostname: str, version: str) -> Proxy:
    """Called by each worker periodically; registers a proxy the first time it is heard from."""
    with transaction.atomic():
        proxy, created = Proxy.objects.select_for_update().get_or_create(
            name=name, defaults={"queue": queue, "hostname": hostname, "version": version}
        )
        proxy.hostname, proxy.version, proxy.last_heartbeat = hostname, version, timezone.now()
        proxy.save(update_fields=["hostname", "version", "last_heartbeat"])
        if created:
            audit.record(
                "inventory.proxy.register", proxy, acting_user=None, after=audit.snapshot(proxy)
            )
    return proxy
