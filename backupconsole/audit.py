"""The audit trail: every service action that changes state records one ``AuditEvent``.

The client address travels in a context variable set by ``AuditContextMiddleware``, so services
need not take the request; actions from tasks or commands simply have none.
"""

from __future__ import annotations

import contextvars
import datetime
import decimal
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.http import HttpRequest, HttpResponse

from backupconsole.models import AuditEvent

client_address: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "client_address", default=None
)

# Field names never copied into audit records (they hold ciphertext of credentials).
_SECRET_FIELDS = {"secret", "secret_encrypted", "password"}


class AuditContextMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        token = client_address.set(request.META.get("REMOTE_ADDR"))
        try:
            return self.get_response(request)
        finally:
            client_address.reset(token)


def _jsonable(value: Any) -> Any:
    if isinstance(value, models.Model):
        return value.pk
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def snapshot(instance: models.Model, extra: Iterable[str] = ()) -> dict[str, Any]:
    """The audit-safe field values of ``instance`` (secrets are reported as set or not)."""
    data: dict[str, Any] = {}
    for field in instance._meta.concrete_fields:
        name = field.attname
        value = getattr(instance, name)
        if field.name in _SECRET_FIELDS:
            data[f"{field.name}_set"] = bool(value)
            continue
        data[name] = _jsonable(value)
    if instance.pk is not None:
        for field in instance._meta.many_to_many:
            data[field.name] = sorted(obj.pk for obj in getattr(instance, field.name).all())
    for name in extra:
        data[name] = _jsonable(getattr(instance, name))
    return data


def record(
    action: str,
    instance: models.Model | None,
    *,
    acting_user: Any,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEvent:
    user = acting_user if acting_user is not None and acting_user.is_authenticated else None
    return AuditEvent.objects.create(
        user=user,
        username=user.get_username() if user else "",
        action=action,
        object_type=ContentType.objects.get_for_model(instance) if instance is not None else None,
        object_id=str(instance.pk) if instance is not None and instance.pk is not None else "",
        object_repr=str(instance)[:200] if instance is not None else "",
        before=_jsonable(before) if before is not None else None,
        after=_jsonable(after) if after is not None else None,
        client_address=client_address.get(),
    )
