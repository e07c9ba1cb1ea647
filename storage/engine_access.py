"""From catalog rows to the engine: open a Repository row's repository, name a VM's key."""

from __future__ import annotations

import re

from inventory.models import VirtualMachine
from storage import models
from storage.choices import RepositoryKind
from storage.engine.backend import Backend
from storage.engine.fs import FilesystemBackend
from storage.engine.repository import Repository


def backend_for(repository: models.Repository) -> Backend:
    if repository.kind == RepositoryKind.S3:
        from storage.engine.s3 import S3Backend

        return S3Backend(
            repository.location,
            prefix=repository.s3_prefix,
            endpoint_url=repository.s3_endpoint or None,
            region=repository.s3_region or None,
            access_key=repository.s3_access_key or None,
            secret_key=repository.get_secret() or None,
        )
    return FilesystemBackend(repository.location)


def open_repository(repository: models.Repository) -> Repository:
    return Repository.open(backend_for(repository), passphrase=repository.get_passphrase() or None)


def vm_key_for(vm: VirtualMachine) -> str:
    """A VM's key in the repository: stable across inventory resyncs and database loss."""
    basis = vm.instance_uuid or f"{vm.connection.name}-{vm.external_id}"
    key = re.sub(r"[^a-z0-9-]+", "-", basis.lower()).strip("-")
    return key[:64] or "vm"
