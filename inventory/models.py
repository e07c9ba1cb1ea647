from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

from backupconsole.crypto import decrypt_secret, encrypt_secret
from backupconsole.permissions import RestrictedQuerySet
from inventory.choices import (
    DEFAULT_PORTS,
    EXCLUDED_DISK_MODES,
    ConnectionKind,
    DiskMode,
    ObjectKind,
    PowerState,
)

_SECRET_PURPOSE = "inventory.Connection.secret"  # noqa: S105 - an AAD label, not a secret


class Connection(models.Model):
    """A hypervisor management endpoint: vCenter, ESXi, Hyper-V, a Xen pool or a KVM host."""

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=16, choices=ConnectionKind.choices)
    address = models.CharField(max_length=255, help_text="Host name or IP address.")
    port = models.PositiveIntegerField(help_text="Defaults to the kind's management port.")
    username = models.CharField(max_length=150, blank=True)
    # AES-256-GCM ciphertext (backupconsole.crypto); never serialized, logged or audited.
    secret = models.TextField(blank=True, editable=False)
    verify_tls = models.BooleanField(default=True)
    tls_fingerprint = models.CharField(
        max_length=95,
        blank=True,
        help_text="Pinned SHA-256 fingerprint of the endpoint's certificate (AA:BB:…).",
    )
    last_tested_at = models.DateTimeField(null=True, blank=True)
    last_test_ok = models.BooleanField(null=True, blank=True)
    last_test_message = models.CharField(max_length=500, blank=True)
    last_synced_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = RestrictedQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        if not self.port:
            self.port = DEFAULT_PORTS[ConnectionKind(self.kind)]
        super().save(*args, **kwargs)

    def set_secret(self, plaintext: str) -> None:
        self.secret = encrypt_secret(plaintext, _SECRET_PURPOSE)

    def get_secret(self) -> str:
        return decrypt_secret(self.secret, _SECRET_PURPOSE)

    @property
    def has_secret(self) -> bool:
        return bool(self.secret)


class InventoryObject(models.Model):
    """A node of a connection's inventory tree other than a VM (datacenter, cluster, host, …)."""

    connection = models.ForeignKey(
        Connection, on_delete=models.CASCADE, related_name="inventory_objects"
    )
    kind = models.CharField(max_length=16, choices=ObjectKind.choices)
    external_id = models.CharField(max_length=255, help_text="The hypervisor's id (moref, UUID).")
    name = models.CharField(max_length=255)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="children"
    )
    capacity_bytes = models.BigIntegerField(null=True, blank=True)
    free_bytes = models.BigIntegerField(null=True, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)

    objects = RestrictedQuerySet.as_manager()

    class Meta:
        ordering = ["connection_id", "kind", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["connection", "external_id"], name="inventoryobject_unique_external_id"
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.name}"


class Tag(models.Model):
    name = models.CharField(max_length=100, unique=True)

    objects = RestrictedQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class VirtualMachineQuerySet(RestrictedQuerySet["VirtualMachine"]):
    def with_latest_restore_point(self) -> VirtualMachineQuerySet:
        """Annotates ``latest_restore_point_id``: the newest usable restore point."""
        from storage.choices import USABLE_POINT_STATES
        from storage.models import RestorePoint

        newest = RestorePoint.objects.filter(
            vm=models.OuterRef("pk"),
            state__in=USABLE_POINT_STATES,
        ).order_by("-created_at", "-id")
        return self.annotate(latest_restore_point_id=models.Subquery(newest.values("pk")[:1]))


class VirtualMachine(models.Model):
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="vms")
    external_id = models.CharField(max_length=255, help_text="The hypervisor's id (moref, UUID).")
    instance_uuid = models.CharField(max_length=64, blank=True)
    name = models.CharField(max_length=255)
    power_state = models.CharField(
        max_length=16, choices=PowerState.choices, default=PowerState.UNKNOWN
    )
    guest_os = models.CharField(max_length=255, blank=True)
    datacenter = models.ForeignKey(
        InventoryObject, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    cluster = models.ForeignKey(
        InventoryObject,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Cluster (vSphere, Hyper-V) or pool (Xen).",
    )
    host = models.ForeignKey(
        InventoryObject, null=True, blank=True, on_delete=models.SET_NULL, related_name="vms"
    )
    folder = models.ForeignKey(
        InventoryObject, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    tags = models.ManyToManyField(Tag, blank=True, related_name="vms")
    cpus = models.PositiveIntegerField(default=1)
    memory_mib = models.PositiveIntegerField(default=0)
    # False once the hypervisor no longer reports it; kept so its restore points stay browsable.
    present = models.BooleanField(default=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)

    objects = VirtualMachineQuerySet.as_manager()

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["connection", "external_id"], name="virtualmachine_unique_external_id"
            )
        ]

    def __str__(self) -> str:
        return self.name


class VirtualDisk(models.Model):
    vm = models.ForeignKey(VirtualMachine, on_delete=models.CASCADE, related_name="disks")
    device_key = models.CharField(max_length=64, help_text="Device key, target (vda) or UUID.")
    label = models.CharField(max_length=255, blank=True)
    capacity_bytes = models.BigIntegerField()
    location = models.CharField(max_length=1024, blank=True, help_text="Path or datastore file.")
    datastore = models.ForeignKey(
        InventoryObject, null=True, blank=True, on_delete=models.SET_NULL, related_name="disks"
    )
    mode = models.CharField(max_length=32, choices=DiskMode.choices, default=DiskMode.PERSISTENT)

    objects = RestrictedQuerySet.as_manager()
    restrict_through = "vm"

    class Meta:
        ordering = ["vm_id", "device_key"]
        constraints = [
            models.UniqueConstraint(fields=["vm", "device_key"], name="virtualdisk_unique_key")
        ]

    def __str__(self) -> str:
        return f"{self.vm} {self.label or self.device_key}"

    @property
    def excluded_reason(self) -> str:
        """Why this disk is left out of backups, or "" when it is backed up."""
        return EXCLUDED_DISK_MODES.get(DiskMode(self.mode), "")

    @property
    def excluded(self) -> bool:
        return bool(self.excluded_reason)


def heartbeat_cutoff() -> datetime:
    """A proxy silent since before this is considered down (three missed heartbeats)."""
    return timezone.now() - timedelta(seconds=3 * settings.PROXY_HEARTBEAT_SECONDS)


class ProxyQuerySet(RestrictedQuerySet["Proxy"]):
    def live(self) -> ProxyQuerySet:
        return self.filter(enabled=True, last_heartbeat__gte=heartbeat_cutoff())


class Proxy(models.Model):
    """A backup worker: a `celery worker` consuming its own queue, close to the hypervisors."""

    name = models.CharField(max_length=100, unique=True)
    queue = models.CharField(max_length=100, unique=True)
    task_slots = models.PositiveIntegerField(default=4)
    transports = models.JSONField(default=list, blank=True)
    connections = models.ManyToManyField(
        Connection,
        blank=True,
        related_name="proxies",
        help_text="Connections this proxy can reach; none means all.",
    )
    enabled = models.BooleanField(default=True)
    hostname = models.CharField(max_length=255, blank=True)
    version = models.CharField(max_length=50, blank=True)
    last_heartbeat = models.DateTimeField(null=True, blank=True)

    objects = ProxyQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "proxies"

    def __str__(self) -> str:
        return self.name

    @property
    def is_live(self) -> bool:
        return bool(
            self.enabled and self.last_heartbeat and self.last_heartbeat >= heartbeat_cutoff()
        )
