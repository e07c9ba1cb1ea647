"""Small presentation helpers for the console templates."""

from django import template

register = template.Library()

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
