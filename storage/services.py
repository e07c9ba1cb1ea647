"""Domain actions on repositories and restore points."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from django.db import transaction

from backupconsole import audit
from backupconsole.errors import ActionRefused
from storage.choices import RepositoryKind
from storage.models import Repository, RestorePoint

REPOSITORY_FIELDS = (
    "name",
    "kind",
    "location",
    "s3_endpoint",
    "s3_region",
    "s3_prefix",
    "s3_access_key",
    "encryption_enabled",
    "compression_level",
    "immutability_days",
    "capacity_bytes",
)
# Fields fixed once data was written: changing them would make existing chunks unreadable.
IMMUTABLE_AFTER_CREATE = ("kind", "location", "s3_endpoint", "s3_prefix", "encryption_enabled")


def _check_location(repository: Repository) -> None:
    if repository.kind == RepositoryKind.FILESYSTEM:
        path = Path(repository.location)
        if not path.is_absolute():
            raise ActionRefused("Give an absolute directory path.", field="location")
        try:
            path.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
                pass
        except OSError as exc:
            raise ActionRefused(
                f"The directory {path} cannot be written: {exc.strerror or exc}.", field="location"
            ) from exc
        if repository.capacity_bytes is None:
            stat = os.statvfs(path)
            repository.capacity_bytes = stat.f_blocks * stat.f_frsize
    elif repository.kind == RepositoryKind.S3:
        if not repository.location or "/" in repository.location:
            raise ActionRefused("Give the bucket name (no slashes).", field="location")
        if not repository.s3_access_key:
            raise ActionRefused("An S3 repository needs an access key.", field="s3_access_key")


def create_repository(*, data: dict[str, Any], secret: str, acting_user: Any) -> Repository:
    repository = Repository(**{k: v for k, v in data.items() if k in REPOSITORY_FIELDS})
    repository.set_secret(secret)
    if repository.kind == RepositoryKind.S3 and not secret:
        raise ActionRefused("An S3 repository needs a secret key.", field="secret")
    _check_location(repository)
    with transaction.atomic():
        repository.save()
        audit.record(
            "storage.repository.create",
            repository,
            acting_user=acting_user,
            after=audit.snapshot(repository),
        )
    return repository


def update_repository(
    repository: Repository, *, data: dict[str, Any], secret: str | None, acting_user: Any
) -> Repository:
    before = audit.snapshot(repository)
    for name in IMMUTABLE_AFTER_CREATE:
        if name in data and data[name] != getattr(repository, name):
            raise ActionRefused(
                "This cannot change once a repository exists; create a new repository and copy "
                "restore points to it.",
                field=name,
            )
    for name in REPOSITORY_FIELDS:
        if name in data:
            setattr(repository, name, data[name])
    if secret is not None:
        repository.set_secret(secret)
    with transaction.atomic():
        repository.save()
        audit.record(
            "storage.repository.update",
            repository,
            acting_user=acting_user,
            before=before,
            after=audit.snapshot(repository),
        )
    return repository


def delete_repository(repository: Repository, *, acting_user: Any) -> None:
    if repository.restore_points.exists():
        raise ActionRefused("The repository holds restore points; prune or move them first.")
    if repository.policies.exists() or repository.copy_policies.exists():
        names = ", ".join(
            sorted({p.name for p in [*repository.policies.all(), *repository.copy_policies.all()]})
        )
        raise ActionRefused(f"Protection policies use this repository: {names}.")
    with transaction.atomic():
        audit.record(
            "storage.repository.delete",
            repository,
            acting_user=acting_user,
            before=audit.snapshot(repository),
        )
        repository.delete()


def set_restore_point_protected(
    restore_point: RestorePoint, *, protected: bool, acting_user: Any
) -> RestorePoint:
    """Protect a restore point from retention (or lift that protection)."""
    with transaction.atomic():
        before = {"protected": restore_point.protected}
        restore_point.protected = protected
        restore_point.save(update_fields=["protected"])
        audit.record(
            "storage.restore_point.protect" if protected else "storage.restore_point.unprotect",
            restore_point,
            acting_user=acting_user,
            before=before,
            after={"protected": protected},
        )
    return restore_point
