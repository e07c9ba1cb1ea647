"""Times in the user's time zone: the browser names it in a cookie, each request activates it."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from zoneinfo import ZoneInfo, available_timezones

from django.http import HttpRequest, HttpResponse
from django.utils import timezone

# Set by frontend/static/frontend/console.js from Intl.DateTimeFormat().resolvedOptions().
TIME_ZONE_COOKIE = "console_tz"


@cache
def _known_zones() -> frozenset[str]:
    return frozenset(available_timezones())


def zone_from_cookie(value: str | None) -> ZoneInfo | None:
    """The zone an IANA name such as ``Europe/Berlin`` names, or None for anything else.

    Only names from the zone database are tried: ZoneInfo() itself reads files, so a cookie
    such as "Europe" (a directory) or "../x" must never reach it.
    """
    if not value or value not in _known_zones():
        return None
    return ZoneInfo(value)


class TimeZoneMiddleware:
    """Activates the cookie's zone for the request; without a valid one, settings.TIME_ZONE."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        zone = zone_from_cookie(request.COOKIES.get(TIME_ZONE_COOKIE))
        if zone is None:
            timezone.deactivate()
        else:
            timezone.activate(zone)
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()  # the thread serves other users next
