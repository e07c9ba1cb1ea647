"""Cron schedules in a policy's time zone: validation and the next firing time."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from croniter import CroniterBadDateError, croniter
from django.core.exceptions import ValidationError


def validate_timezone(value: str) -> None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(
            f"{value!r} is not a known time zone; use an IANA name such as Europe/Berlin."
        ) from None


def validate_cron(value: str) -> None:
    fields = value.split()
    if len(fields) != 5:
        raise ValidationError(
            "A schedule has five fields: minute hour day-of-month month day-of-week "
            "(e.g. '0 22 * * 1-5' for 22:00 on weekdays)."
        )
    if not croniter.is_valid(value):
        raise ValidationError(f"{value!r} is not a valid cron expression.")
    try:
        # Eight years cover every leap-day pattern, so a date that never occurs is caught here.
        croniter(value, datetime(2024, 1, 1), max_years_between_matches=8).get_next(datetime)
    except CroniterBadDateError:
        raise ValidationError(f"{value!r} never fires (no such date in any year).") from None


def next_fire(cron: str, tz: str, after: datetime) -> datetime:
    """The first firing strictly after ``after`` (aware), as an aware datetime."""
    local = after.astimezone(ZoneInfo(tz))
    return croniter(cron, local, max_years_between_matches=8).get_next(datetime)


def known_timezones() -> list[str]:
    return sorted(available_timezones())
