"""Domain actions on repositories and restore points."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from django.db import transaction
from django.utils import timezone

from backupconsole import audit
from backupconsole.errors import ActionRefused
from storage.catalog import import_catalog
from storage.choices import RepositoryKind
from storage.engine.backend import BackendError, ObjectLocked
from storage.engine.keys import WrongPassphrase
from storage.engine.repository import Repository as EngineRepository
from storage.engine.repository import RepositoryError as EngineRepositoryError
from storage.engine_access import backend_for, open_repository
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
IMMUTABLE_AFTER_CREATE = (
    "kind",
    "location",
    "s3_endpoint",
    "s3_prefix",
    "encryption_enabled",
    "compression_level",
    "immutability_days",
)


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


def _init_or_attach(repository: Repository, passphrase: str) -> tuple[EngineRepository, bool]:
    """Create the repository at its location, or open the one already there (attach)."""
    backend = backend_for(repository)
    try:
        if backend.exists("config"):
            engine = EngineRepository.open(backend, passphrase=passphrase or None)
            config = engine.config
            repository.encryption_enabled = config.encryption
            repository.compression_level = config.compression_level
            repository.immutability_days = config.immutability_days
            return engine, True
        return EngineRepository.init(
            backend,
            passphrase=passphrase or None,
            encryption=repository.encryption_enabled,
            compression_level=repository.compression_level,
            immutability_days=repository.immutability_days,
        ), False
    except WrongPassphrase:
        raise ActionRefused(
            "A repository exists there already, and this passphrase does not open it.",
            field="passphrase",
        ) from None
    except (EngineRepositoryError, BackendError) as exc:
        raise ActionRefused(str(exc), field="location") from exc


def create_repository(
    *, data: dict[str, Any], secret: str, passphrase: str = "", acting_user: Any
) -> Repository:
    """Create a repository, or attach an existing one (its restore points join the catalog)."""
    repository = Repository(**{k: v for k, v in data.items() if k in REPOSITORY_FIELDS})
    repository.set_secret(secret)
    repository.set_passphrase(passphrase)
    if repository.kind == RepositoryKind.S3 and not secret:
        raise ActionRefused("An S3 repository needs a secret key.", field="secret")
    _check_location(repository)
    if repository.encryption_enabled and not passphrase:
        raise ActionRefused(
            "An encrypted repository needs a passphrase. Keep a copy apart: restoring without "
            "the console (python -m storage) needs it.",
            field="passphrase",
        )
    engine, attached = _init_or_attach(repository, passphrase)
    repository.key_fingerprint = engine.fingerprint()
    with transaction.atomic():
        repository.save()
        audit.record(
            "storage.repository.attach" if attached else "storage.repository.create",
            repository,
            acting_user=acting_user,
            after=audit.snapshot(repository),
        )
        if attached:
            import_catalog(repository, engine)
    return repository


def update_repository(
    repository: Repository,
    *,
    data: dict[str, Any],
    secret: str | None,
    acting_user: Any,
    passphrase: str | None = None,
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
    if passphrase is not None:
        if not passphrase:
            raise ActionRefused("The passphrase cannot be empty.", field="passphrase")
        # Re-wraps the same key in the repository first: no data is rewritten.
        open_repository(repository).change_passphrase(passphrase)
        repository.set_passphrase(passphrase)
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


def delete_restore_point(point: RestorePoint, *, acting_user: Any) -> None:
    """Delete a restore point's manifest (its data goes at the next GC) and its catalog row."""
    if point.protected:
        raise ActionRefused("The restore point is protected; lift the protection first.")
    if point.immutable_until and point.immutable_until > timezone.now():
        raise ActionRefused(
            f"The restore point is immutable until {point.immutable_until:%Y-%m-%d %H:%M} UTC."
        )
    try:
        open_repository(point.repository).backend.delete(point.manifest_path)
    except ObjectLocked as exc:
        raise ActionRefused(str(exc)) from exc
    with transaction.atomic():
        audit.record(
            "storage.restore_point.delete",
            point,
            acting_user=acting_user,
            before=audit.snapshot(point),
        )
        point.delete()


def check_restore_target(point: RestorePoint, options: dict[str, Any], user: Any) -> None:
    """Refuse, before a run is queued, a restore that could only fail: a disk the point does
    not hold, a target ``user`` may not restore to or of another hypervisor, a name a VM there
    already has (restores never overwrite), an unknown or too small datastore."""
    from storage.restore_targets import check_target

    check_target(point, options, user)


def start_restore(point: RestorePoint, *, options: dict[str, Any], acting_user: Any) -> Any:
    """Queue a restore of a restore point: a disk to a file or a datastore, or the VM as a new
    VM (options as RestoreRequestSerializer validates them)."""
    from jobs.choices import RunKind, Trigger
    from jobs.dispatch import enqueue_run
    from jobs.models import JobRun

    if not RestorePoint.objects.restrict(acting_user, "restore").filter(pk=point.pk).exists():
        raise ActionRefused("Your role does not allow restoring this restore point.")
    if point.state == "corrupt":
        raise ActionRefused(
            f"The restore point is corrupt ({point.verify_error[:200]}); it is never restored "
            "silently. Choose another restore point."
        )
    check_restore_target(point, options, acting_user)
    with transaction.atomic():
        run = JobRun.objects.create(
            kind=RunKind.RESTORE,
            repository=point.repository,
            options={**options, "restore_point": point.pk},
            trigger=Trigger.MANUAL,
            requested_by=acting_user if getattr(acting_user, "is_authenticated", False) else None,
        )
        audit.record(
            "storage.restore_point.restore",
            point,
            acting_user=acting_user,
            after={"run": run.pk, **options},
        )
        transaction.on_commit(lambda: enqueue_run(run.pk))
    return run


def start_repository_job(
    repository: Repository, *, kind: str, options: dict[str, Any], acting_user: Any
) -> Any:
    """Queue a verify, prune or GC run against a repository (it shows up as a run)."""
    from jobs.choices import RunState, Trigger
    from jobs.dispatch import enqueue_run
    from jobs.models import JobRun

    with transaction.atomic():
        Repository.objects.select_for_update().filter(pk=repository.pk).first()
        active = repository.runs.exclude(state=RunState.FINISHED).filter(kind=kind).first()
        if active is not None:
            raise ActionRefused(f"A {active.get_kind_display().lower()} run is already active.")
        run = JobRun.objects.create(
            kind=kind,
            repository=repository,
            options=options,
            trigger=Trigger.MANUAL,
            requested_by=acting_user if getattr(acting_user, "is_authenticated", False) else None,
        )
        audit.record(
            f"storage.repository.{kind}",
            repository,
            acting_user=acting_user,
            after={"run": run.pk, **options},
        )
        transaction.on_commit(lambda: enqueue_run(run.pk))
    return run
