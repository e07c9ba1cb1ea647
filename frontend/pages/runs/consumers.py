"""The console's websocket consumers: they send HTML fragments for the HTMX ws extension.

Each is a JSON consumer from jobs/consumers.py with another ``forward``: the same subscription and
the same per-event ``restrict`` check, but instead of the event it sends the fragment the page
shows, rendered for this user from the database (fragments.py), which the extension swaps in by
element id. On connect each sends the current fragment, so nothing published before the socket
opened (or while it was down) is missed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from django.utils import timezone

from frontend.middleware import TIME_ZONE_COOKIE, zone_from_cookie
from jobs.consumers import EventsConsumer, RunConsumer

from .fragments import live_html, rows_html, running_html
from .listing import PAGE_SIZE


@database_sync_to_async
def _render(scope: dict[str, Any], render: Callable[..., str | None], *args: Any) -> str | None:
    # Times in the zone the browser's requests use (the same cookie TimeZoneMiddleware reads).
    zone = zone_from_cookie(scope.get("cookies", {}).get(TIME_ZONE_COOKIE))
    with timezone.override(zone):
        return render(scope["user"], *args)


class RunPageConsumer(RunConsumer):
    """``/ws/console/runs/<pk>/``: the run page's ``#run-live`` fragment after each update."""

    async def connected(self) -> None:
        await self._push()

    async def forward(self, event: dict[str, Any]) -> None:
        await self._push()

    async def _push(self) -> None:
        html = await _render(self.scope, live_html, self.run_pk)
        if html:
            await self.send(text_data=html)


class RunRowsConsumer(EventsConsumer):
    """``/ws/console/events/?runs=1,2``: the list rows of the given runs as they change."""

    async def connect(self) -> None:
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        wanted = ",".join(query.get("runs", [])).split(",")
        self.wanted = {int(pk) for pk in wanted if pk.isdigit()}
        if len(self.wanted) > PAGE_SIZE:
            self.wanted = set(sorted(self.wanted)[:PAGE_SIZE])
        await super().connect()

    async def connected(self) -> None:
        await self._push(self.wanted)

    async def run_update(self, event: dict[str, Any]) -> None:
        if event["run"] in self.wanted:  # before the permission query: most events are not
            await super().run_update(event)

    async def forward(self, event: dict[str, Any]) -> None:
        await self._push({event["run"]})

    async def _push(self, pks: set[int]) -> None:
        html = await _render(self.scope, rows_html, pks) if pks else ""
        if html:
            await self.send(text_data=html)


class RunningRunsConsumer(EventsConsumer):
    """``/ws/console/running/``: the dashboard's running-runs panel after each update of a run
    the user may view."""

    async def connected(self) -> None:
        await self._push()

    async def forward(self, event: dict[str, Any]) -> None:
        await self._push()

    async def _push(self) -> None:
        html = await _render(self.scope, running_html)
        if html:
            await self.send(text_data=html)
