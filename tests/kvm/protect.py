"""The setup every KVM end-to-end test shares: a connection to a libvirt, synced, a repository,
and a policy protecting the named domains."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inventory import services as inventory_services
from inventory.models import VirtualMachine
from inventory.tasks import sync_connection
from jobs import services
from jobs.models import ProtectionPolicy
from storage import services as storage_services


def protect(
    address: str,
    domain_names: list[str],
    user: Any,
    repo_dir: Path,
    consistency: str = "crash",
) -> ProtectionPolicy:
    connection = inventory_services.create_connection(
        data={"name": "kvm", "kind": "kvm", "address": address}, secret="", acting_user=user
    )
    sync_connection(connection.pk)
    repository = storage_services.create_repository(
        data={"name": "primary", "kind": "filesystem", "location": str(repo_dir)},
        secret="",
        passphrase="pw",
        acting_user=user,
    )
    return services.create_policy(
        data={"name": "nightly", "repository": repository, "options": {"consistency": consistency}},
        vms=list(VirtualMachine.objects.filter(name__in=domain_names)),
        excluded_vms=[],
        rules=[],
        schedules=[],
        acting_user=user,
    )
