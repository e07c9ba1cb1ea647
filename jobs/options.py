"""Backup options, resolved defaults → policy → per-VM override."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError

from inventory.choices import Transport
from storage.choices import Consistency

OPTION_KEYS = ("consistency", "transport_order", "max_parallel_vms", "bandwidth_limit_mbps")


def validate_options(value: Any) -> None:
    """Field validator for a policy's or a VM override's ``options``."""
    if not isinstance(value, dict):
        raise ValidationError("Options must be an object.")
    errors: list[str] = []
    unknown = sorted(set(value) - set(OPTION_KEYS))
    if unknown:
        errors.append(f"Unknown options: {', '.join(unknown)}. Known: {', '.join(OPTION_KEYS)}.")
    if "consistency" in value and value["consistency"] not in Consistency.values:
        errors.append(f"consistency must be one of: {', '.join(Consistency.values)}.")
    if "transport_order" in value:
        order = value["transport_order"]
        if (
            not isinstance(order, list)
            or not order
            or any(t not in Transport.values for t in order)
            or len(set(order)) != len(order)
        ):
            errors.append(
                "transport_order must list distinct transports from: "
                f"{', '.join(Transport.values)}."
            )
    if "max_parallel_vms" in value:
        n = value["max_parallel_vms"]
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 64:
            errors.append("max_parallel_vms must be a whole number from 1 to 64.")
    if "bandwidth_limit_mbps" in value:
        limit = value["bandwidth_limit_mbps"]
        if limit is not None and (
            not isinstance(limit, int) or isinstance(limit, bool) or limit < 1
        ):
            errors.append("bandwidth_limit_mbps must be a positive number of Mbit/s, or null.")
    if errors:
        raise ValidationError(errors)


def resolve_options(
    policy_options: dict[str, Any], vm_override: dict[str, Any] | None = None
) -> dict[str, Any]:
    resolved = dict(settings.POLICY_OPTION_DEFAULTS)
    resolved.update(policy_options)
    resolved.update(vm_override or {})
    return resolved
