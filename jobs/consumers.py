"""Websocket consumers for live run progress.

Both re-check ``restrict(user, "view")`` for every event, so a user whose access is withdrawn
stops receiving updates, and nobody sees a run they may not view. The console's HTML consumers
(frontend/pages/runs/consumers.py) subclass these and override ``connected``/``forward`` only,
so the JSON API and the console share one permission check.
"""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from backupconsole.permissions import forget_cached_assignments
from jobs.models import JobRun
from jobs.progress import ALL_RUNS_GROUP, run_group

FORBIDDEN = 4403


@database_sync_to_async
def _may_view(user: Any, run_pk: int) -> bool:
    # The socket's user object lives as long as the connection: drop its cached role
    # assignments so a role revoked meanwhile takes effect at the next event.
    forget_cached_assignments(user)
    return JobRun.objects.restrict(user, "view").filter(pk=run_pk).exists()


class RunConsumer(AsyncJsonWebsocketConsumer):
    """``/ws/runs/<pk>/``: the updates of one run."""

    async def connect(self) -> None:
        self.user = self.scope.get("user")
        self.run_pk = int(self.scope["url_route"]["kwargs"]["pk"])
        if not await _may_view(self.user, self.run_pk):
            await self.close(code=FORBIDDEN)
            return
        self.group = run_group(self.run_pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.connected()

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def connected(self) -> None:
        """Called once the socket is accepted and subscribed (the console sends the current
        state here, so nothing published before the socket opened is missed)."""

    async def run_update(self, event: dict[str, Any]) -> None:
        if await _may_view(self.user, event["run"]):
            await self.forward(event)

    async def forward(self, event: dict[str, Any]) -> None:
        """Send an event the user may see."""
        await self.send_json(event)


class EventsConsumer(AsyncJsonWebsocketConsumer):
    """``/ws/events/``: updates of every run the user may view (dashboard, run lists)."""

    async def connect(self) -> None:
        self.user = self.scope.get("user")
        if self.user is None or not self.user.is_authenticated:
            await self.close(code=FORBIDDEN)
            return
        await self.channel_layer.group_add(ALL_RUNS_GROUP, self.channel_name)
        await self.accept()
        await self.connected()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(ALL_RUNS_GROUP, self.channel_name)

    async def connected(self) -> None:
        """Called once the socket is accepted and subscribed."""

    async def run_update(self, event: dict[str, Any]) -> None:
        if await _may_view(self.user, event["run"]):
            await self.forward(event)

    async def forward(self, event: dict[str, Any]) -> None:
        """Send an event the user may see."""
        await self.send_json(event)
