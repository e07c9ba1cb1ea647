from __future__ import annotations

from django.db import models

from backupconsole.crypto import decrypt_secret, encrypt_secret
from backupconsole.permissions import RestrictedQuerySet
from storage.choices import Consistency, RepositoryKind, RestorePointState

_SECRET_PURPOSE = "storage.Repository.secret"  # noqa: S105 - an AAD label, not a secret
_PASSPHRASE_PURPOSE = "storage.Repository.passphrase"  # noqa: S105 - an AAD label


class Repository(models.Model):
    """Where restore points live: a directory or an S3 bucket holding the chunk store."""

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=16, choices=RepositoryKind.choices)
    location = models.CharField(
        max_length=1024, help_text="Absolute directory path, or the bucket name for S3."
    )
    s3_endpoint = models.URLField(blank=True, help_text="S3 endpoint URL; empty for AWS.")
    s3_region = models.CharField(max_length=64, blank=True)
    s3_prefix = models.CharField(max_length=255, blank=True)
    s3_access_key = models.CharField(max_length=255, blank=True)
    # AES-256-GCM ciphertext of the S3 secret key; never serialized, logged or audited.
    secret = models.TextField(blank=True, editable=False)
    # The repository passphrase, encrypted like credentials, so scheduled jobs can open it.
    passphrase = models.TextField(blank=True, editable=False)
    encryption_enabled = models.BooleanField(default=True)
    key_fingerprint = models.CharField(max_length=95, blank=True)
    # zstd level 1, as Proxmox Backup Server uses: about twice as fast as level 3.
    compression_level = models.PositiveSmallIntegerField(default=1)
    immutability_days = models.PositiveIntegerField(
        default=0, help_text="Restore points cannot be deleted for this many days (0: off)."
    )
    capacity_bytes = models.BigIntegerField(null=True, blank=True)
    used_bytes = models.BigIntegerField(default=0)
    usage_updated_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = RestrictedQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "repositories"

    def __str__(self) -> str:
        return self.name

    def set_secret(self, plaintext: str) -> None:
        self.secret = encrypt_secret(plaintext, _SECRET_PURPOSE)

    def get_secret(self) -> str:
        return decrypt_secret(self.secret, _SECRET_PURPOSE)

    def set_passphrase(self, plaintext: str) -> None:
        self.passphrase = encrypt_secret(plaintext, _PASSPHRASE_PURPOSE)

    def get_passphrase(self) -> str:
        return decrypt_secret(self.passphrase, _PASSPHRASE_PURPOSE)


class RestorePoint(models.Model):
    """A logically full copy of one VM at one time; its manifest lives in the repository."""

    # Whoever may act on the VM may act on its points too (self-service restores by VM owners),
    # besides the grants on restore points themselves (backupconsole.permissions).
    restrict_also_through = "vm"
    # The point outlives the VM's inventory row (and the database: import_repository rebuilds
    # these rows from manifests), so the VM is also named by its key and name.
    vm = models.ForeignKey(
        "inventory.VirtualMachine",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="restore_points",
    )
    vm_key = models.CharField(max_length=64, db_index=True)
    vm_name = models.CharField(max_length=255, blank=True)
    point_id = models.CharField(max_length=64, help_text="The id of its manifest.")
    repository = models.ForeignKey(
        Repository, on_delete=models.PROTECT, related_name="restore_points"
    )
    run = models.ForeignKey(
        "jobs.JobRun",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="restore_points",
    )
    created_at = models.DateTimeField(db_index=True, help_text="When the snapshot was taken.")
    state = models.CharField(
        max_length=16, choices=RestorePointState.choices, default=RestorePointState.COMMITTING
    )
    consistency = models.CharField(
        max_length=16, choices=Consistency.choices, default=Consistency.CRASH
    )
    protected = models.BooleanField(default=False, help_text="Protected points are never pruned.")
    logical_bytes = models.BigIntegerField(default=0, help_text="Size of the disks it restores.")
    read_bytes = models.BigIntegerField(default=0, help_text="Bytes read from the source.")
    stored_bytes = models.BigIntegerField(default=0, help_text="Bytes written, after dedup.")
    new_unique_bytes = models.BigIntegerField(default=0, help_text="Chunks no other point has.")
    manifest_path = models.CharField(max_length=1024, blank=True)
    immutable_until = models.DateTimeField(null=True, blank=True)
    verified_at = models.DateTimeField(null=True, blank=True)
    verify_error = models.TextField(blank=True)

    objects = RestrictedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["vm", "-created_at"])]
        constraints = [
            models.UniqueConstraint(
                fields=["repository", "point_id"], name="restorepoint_unique_point_id"
            )
        ]

    def __str__(self) -> str:
        return f"{self.vm_name or self.vm_key} @ {self.created_at:%Y-%m-%d %H:%M}"


class RestorePointDisk(models.Model):
    restore_point = models.ForeignKey(RestorePoint, on_delete=models.CASCADE, related_name="disks")
    disk = models.ForeignKey(
        "inventory.VirtualDisk", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    device_key = models.CharField(max_length=64)
    label = models.CharField(max_length=255, blank=True)
    capacity_bytes = models.BigIntegerField()
    index_path = models.CharField(max_length=1024, blank=True)
    read_bytes = models.BigIntegerField(default=0)
    stored_bytes = models.BigIntegerField(default=0)
    change_token = models.CharField(
        max_length=255, blank=True, help_text="Change-tracking token (changeId, checkpoint)."
    )
    full_read_reason = models.CharField(
        max_length=500, blank=True, help_text="Why the disk was read in full, if it was."
    )
    checksum = models.CharField(max_length=128, blank=True)
    corrupt_ranges = models.JSONField(default=list, blank=True)

    objects = RestrictedQuerySet.as_manager()
    restrict_through = "restore_point"

    class Meta:
        ordering = ["restore_point_id", "device_key"]
        constraints = [
            models.UniqueConstraint(
                fields=["restore_point", "device_key"], name="restorepointdisk_unique_key"
            )
        ]

    def __str__(self) -> str:
        return f"{self.restore_point} {self.label or self.device_key}"
