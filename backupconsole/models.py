from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.db import models

from backupconsole.permissions import RestrictedQuerySet
from backupconsole.roles import Role


class RoleAssignment(models.Model):
    """Grants a user the actions of a role, on all objects or on a constrained subset."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="role_assignments"
    )
    role = models.CharField(max_length=32, choices=Role.choices)
    object_types = models.JSONField(
        default=list,
        blank=True,
        help_text='Model labels this applies to, e.g. ["inventory.virtualmachine"]; empty = all.',
    )
    constraints = models.JSONField(
        default=dict,
        blank=True,
        help_text='Queryset lookups the rows must match, e.g. {"tags__name": "web"}; empty = all.',
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = RestrictedQuerySet.as_manager()

    class Meta:
        ordering = ["user_id", "role"]

    def __str__(self) -> str:
        return f"{self.user} as {self.role}"

    def clean(self) -> None:
        if self.constraints and not self.object_types:
            raise ValidationError(
                {"constraints": "Constraints need object types: lookups differ between models."}
            )


class AuditEvent(models.Model):
    """One state-changing action: who did what to which object, with before/after values."""

    time = models.DateTimeField(auto_now_add=True, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    # Kept as text so the record survives the user's deletion.
    username = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=100, db_index=True)
    object_type = models.ForeignKey(
        ContentType, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    object_id = models.CharField(max_length=64, blank=True)
    object_repr = models.CharField(max_length=200, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    client_address = models.GenericIPAddressField(null=True, blank=True)

    objects = RestrictedQuerySet.as_manager()

    class Meta:
        ordering = ["-time", "-id"]
        indexes = [models.Index(fields=["object_type", "object_id"])]

    def __str__(self) -> str:
        return f"{self.time:%Y-%m-%d %H:%M:%S} {self.username or 'system'} {self.action}"
