"""HTMX requests: which ones want only a fragment of a page."""

from __future__ import annotations

from django.http import HttpRequest


def is_partial(request: HttpRequest) -> bool:
    """An HTMX request for a fragment. A history restore (the back button after a cache miss)
    is an HTMX request too, but it wants the whole page."""
    return (
        request.headers.get("HX-Request") == "true"
        and request.headers.get("HX-History-Restore-Request") != "true"
    )
