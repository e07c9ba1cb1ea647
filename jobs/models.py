from __future__ import annotations

from django.conf import settings
from django.db import models

from backupconsole.permissions import RestrictedQuerySet
from jobs.choices import (
    LogLevel,
    Phase,
    RuleKind,
    RunKind,
    RunResult,
    RunState,
    TaskKind,
    TaskState,
    Trigger,
)
from jobs.options import validate_options
from jobs.schedules import validate_cron, validate_timezone


class ProtectionPolicy(models.Model):
    """What to protect, when, how long to keep it and where to put it."""

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    enabled = models.BooleanField(default=True)
    vms = models.ManyToManyField(
        "inventory.VirtualMachine", blank=True, related_name="explicit_policies"
    )
    excluded_vms = models.ManyToManyField(
        "inventory.VirtualMachine", blank=True, related_name="excluding_policies"
    )
    # The VMs the selection resolved to when the policy or the inventory last changed; runs
    # resolve again at start, so this only serves "which policies protect this VM" lookups.
    members = models.ManyToManyField(
        "inventory.VirtualMachine", blank=True, related_name="protecting_policies", editable=False
    )
    repository = models.ForeignKey(
        "storage.Repository", on_delete=models.PROTECT, related_name="policies"
    )
    copy_repository = models.ForeignKey(
        "storage.Repository",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="copy_policies",
        help_text="Optional secondary copy (backup copy) target.",
    )
    keep_last = models.PositiveIntegerField(default=7)
    keep_daily = models.PositiveIntegerField(default=0)
    keep_weekly = models.PositiveIntegerField(default=0)
    keep_monthly = models.PositiveIntegerField(default=0)
    keep_yearly = models.PositiveIntegerField(default=0)
    rpo_hours = models.PositiveIntegerField(
        default=24, help_text="A VM whose newest restore point is older than this is in breach."
    )
    options = models.JSONField(
        default=dict,
        blank=True,
        validators=[validate_options],
        help_text="Overrides of the default backup options.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = RestrictedQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "protection policies"

    def __str__(self) -> str:
        return self.name


class SelectionRule(models.Model):
    """A dynamic selection rule, resolved each time the policy runs."""

    policy = models.ForeignKey(ProtectionPolicy, on_delete=models.CASCADE, related_name="rules")
    kind = models.CharField(max_length=16, choices=RuleKind.choices)
    value = models.CharField(
        max_length=255,
        help_text="Tag name, object name (folder, cluster, host, connection) or a name pattern "
        "(shell-style, e.g. web-*).",
    )
    exclude = models.BooleanField(default=False, help_text="Matching VMs are left out.")

    objects = RestrictedQuerySet.as_manager()
    restrict_through = "policy"

    class Meta:
        ordering = ["policy_id", "exclude", "id"]

    def __str__(self) -> str:
        return f"{'exclude' if self.exclude else 'include'} {self.kind}={self.value}"


class Schedule(models.Model):
    policy = models.ForeignKey(ProtectionPolicy, on_delete=models.CASCADE, related_name="schedules")
    cron = models.CharField(
        max_length=100,
        validators=[validate_cron],
        help_text="Five cron fields: minute hour day-of-month month day-of-week.",
    )
    timezone = models.CharField(max_length=64, default="UTC", validators=[validate_timezone])
    enabled = models.BooleanField(default=True)
    last_fired_at = models.DateTimeField(null=True, blank=True)

    objects = RestrictedQuerySet.as_manager()
    restrict_through = "policy"

    class Meta:
        ordering = ["policy_id", "id"]

    def __str__(self) -> str:
        return f"{self.cron} ({self.timezone})"


class VMOverride(models.Model):
    """Per-VM option overrides inside one policy (last step of defaults → policy → VM)."""

    policy = models.ForeignKey(ProtectionPolicy, on_delete=models.CASCADE, related_name="overrides")
    vm = models.ForeignKey("inventory.VirtualMachine", on_delete=models.CASCADE, related_name="+")
    options = models.JSONField(default=dict, validators=[validate_options])

    objects = RestrictedQuerySet.as_manager()
    restrict_through = "policy"

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["policy", "vm"], name="vmoverride_unique_policy_vm")
        ]

    def __str__(self) -> str:
        return f"{self.policy} / {self.vm}"


class JobRun(models.Model):
    """One execution of a policy (or an ad hoc job): the root of the task tree."""

    # Whoever started a run may follow and cancel it (a VM owner's restore), whatever else their
    # role allows.
    restrict_owner = "requested_by"

    kind = models.CharField(max_length=16, choices=RunKind.choices, default=RunKind.BACKUP)
    policy = models.ForeignKey(
        ProtectionPolicy, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs"
    )
    trigger = models.CharField(max_length=16, choices=Trigger.choices)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    proxy = models.ForeignKey(
        "inventory.Proxy", null=True, blank=True, on_delete=models.SET_NULL, related_name="runs"
    )
    # Repository jobs (verify, prune, GC, copy) run against a repository rather than a policy.
    repository = models.ForeignKey(
        "storage.Repository",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="runs",
    )
    options = models.JSONField(default=dict, blank=True)
    state = models.CharField(max_length=24, choices=RunState.choices, default=RunState.QUEUED)
    result = models.CharField(max_length=16, choices=RunResult.choices, blank=True)
    reason = models.TextField(blank=True, help_text="Why the run ended as it did.")
    cancel_requested = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    bytes_done = models.BigIntegerField(default=0)
    bytes_total = models.BigIntegerField(default=0)
    rate_bps = models.BigIntegerField(default=0)
    eta_seconds = models.IntegerField(null=True, blank=True)

    objects = RestrictedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["state", "created_at"])]

    def __str__(self) -> str:
        subject = self.policy.name if self.policy_id and self.policy else "ad hoc"
        return f"{self.get_kind_display()} #{self.pk} ({subject})"

    @property
    def is_active(self) -> bool:
        return self.state != RunState.FINISHED


class RunTask(models.Model):
    """A node of a run's task tree: VM → disk → phase, with its progress."""

    run = models.ForeignKey(JobRun, on_delete=models.CASCADE, related_name="tasks")
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="children"
    )
    kind = models.CharField(max_length=8, choices=TaskKind.choices)
    phase = models.CharField(max_length=16, choices=Phase.choices, blank=True)
    name = models.CharField(max_length=255)
    vm = models.ForeignKey(
        "inventory.VirtualMachine",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    disk = models.ForeignKey(
        "inventory.VirtualDisk", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    proxy = models.ForeignKey(
        "inventory.Proxy",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="tasks",
        help_text="The proxy that did this VM's work.",
    )
    state = models.CharField(max_length=16, choices=TaskState.choices, default=TaskState.PENDING)
    message = models.TextField(blank=True)
    position = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    bytes_done = models.BigIntegerField(default=0)
    bytes_total = models.BigIntegerField(default=0)
    rate_bps = models.BigIntegerField(default=0)
    eta_seconds = models.IntegerField(null=True, blank=True)
    # Share of wall time each stage was busy (0..1), and the stage that limited the rate.
    busy_source = models.FloatField(null=True, blank=True)
    busy_proxy = models.FloatField(null=True, blank=True)
    busy_repository = models.FloatField(null=True, blank=True)
    bottleneck = models.CharField(max_length=16, blank=True)

    objects = RestrictedQuerySet.as_manager()
    restrict_through = "run"

    class Meta:
        ordering = ["run_id", "position", "id"]

    def __str__(self) -> str:
        return self.name


class RunLog(models.Model):
    run = models.ForeignKey(JobRun, on_delete=models.CASCADE, related_name="logs")
    task = models.ForeignKey(
        RunTask, null=True, blank=True, on_delete=models.CASCADE, related_name="logs"
    )
    time = models.DateTimeField(auto_now_add=True)
    level = models.PositiveSmallIntegerField(choices=LogLevel.choices, default=LogLevel.INFO)
    message = models.TextField()

    objects = RestrictedQuerySet.as_manager()
    restrict_through = "run"

    class Meta:
        ordering = ["run_id", "time", "id"]

    def __str__(self) -> str:
        return self.message[:80]


class SnapshotArtifact(models.Model):
    """Something a backup created on a hypervisor (snapshot, checkpoint, scratch file, export).

    Written *before* the artifact is created and marked removed after its cleanup, so one that a
    crashed proxy left behind is found and removed by the sweeper.
    """

    connection = models.ForeignKey(
        "inventory.Connection", on_delete=models.CASCADE, related_name="artifacts"
    )
    vm = models.ForeignKey(
        "inventory.VirtualMachine",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    run = models.ForeignKey(
        JobRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="artifacts"
    )
    kind = models.CharField(max_length=32)
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    removed_at = models.DateTimeField(null=True, blank=True, db_index=True)
    note = models.TextField(blank=True, help_text="Who removed it and why, or why it could not be.")

    objects = RestrictedQuerySet.as_manager()
    restrict_through = "connection"

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.kind} on {self.connection}"
