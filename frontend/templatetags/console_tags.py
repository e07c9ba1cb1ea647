"""Small presentation helpers for the console templates."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import template
from django.urls import NoReverseMatch, reverse

register = template.Library()

_BINARY_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB")

# Bootstrap colour names for the states and results of runs, tasks and connection tests.
_TONES = {
    "succeeded": "success",
    "verified": "success",
    "committed": "success",
    "warning": "warning",
    "failed": "danger",
    "corrupt": "danger",
    "cancelled": "secondary",
    "skipped": "secondary",
    "queued": "light",
    "pending": "light",
    "starting": "info",
    "working": "primary",
    "running": "primary",
    "post_processing": "info",
    "waiting_repository": "warning",
    "finished": "secondary",
}


@register.filter
def tone(value: object) -> str:
    """The Bootstrap colour for a state or result value (``True``/``False`` for test results)."""
    if value is True:
        return "success"
    if value is False:
        return "danger"
    return _TONES.get(str(value), "secondary")


@register.filter(name="bytes")
def binary_bytes(value: object) -> str:
    """A size in binary units, unbreakable: ``1536`` → ``1.5 KiB``; ``""`` for no value."""
    if value is None or value == "":
        return ""
    try:
        size = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""
    if abs(size) < 1024:
        return f"{int(size)}\u00a0B"
    for unit in _BINARY_UNITS:
        size /= 1024
        if abs(size) < 1024 or unit == _BINARY_UNITS[-1]:
            break
    return f"{size:.1f}\u00a0{unit}"


@register.filter
def ratio(value: object) -> str:
    """A ratio such as a dedup ratio: ``2.345`` → ``2.3`` and a multiplication sign; a dash
    when unknown."""
    if value is None or value == "":
        return "—"
    try:
        return f"{float(value):.1f}\u00d7"  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "—"


@register.filter
def duration(value: object) -> str:
    """A length of time (seconds or a timedelta), coarse as people read it: ``3725`` →
    ``1 h 02 min``, ``125`` → ``2 min 05 s``, ``7`` → ``7 s``; ``""`` for no value."""
    if value is None or value == "":
        return ""
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    try:
        total = max(0, int(float(seconds)))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours >= 24:
        return f"{hours // 24}\u00a0d {hours % 24}\u00a0h"
    if hours:
        return f"{hours}\u00a0h {minutes:02d}\u00a0min"
    if minutes:
        return f"{minutes}\u00a0min {secs:02d}\u00a0s"
    return f"{secs}\u00a0s"


@register.simple_tag
def console_url(name: str, *args: Any) -> str:
    """The URL of console page ``name`` (namespace "frontend"), or "" while it does not exist.

    Lets one page area link to another before that area is built: wrap the link in
    ``{% console_url "run" run.pk as url %}{% if url %}…{% endif %}``.
    """
    try:
        return reverse(f"frontend:{name}", args=args)
    except NoReverseMatch:
        return ""
