"""The all-in-one process of embedded mode: Celery worker threads and the beat scheduler,
started beside the ASGI server, over the in-process ``memory://`` broker, and the in-memory
channel layer that lets those threads publish progress to the server's websockets."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from celery.beat import EmbeddedService
from channels.layers import InMemoryChannelLayer
from django.conf import settings

from backupconsole.celery import app

T = TypeVar("T")
EMBEDDED_POLLING_SECONDS = 0.1


class ThreadSafeInMemoryChannelLayer(InMemoryChannelLayer):
    """Channels' in-memory layer, safe to publish to from worker threads.

    Its queues and groups belong to the event loop of the websocket consumers (the server's).
    A worker thread publishes with ``async_to_sync``, i.e. from another event loop: it would
    wake a consumer's waiting future from the wrong thread (the server only notices on its next
    wake-up) and change the group dicts while the server iterates them. So sends from another
    loop run on the consumers' loop instead.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._home: asyncio.AbstractEventLoop | None = None

    def _claim(self) -> None:
        """Called by consumers' operations: the loop they run on is where the queues live."""
        self._home = asyncio.get_running_loop()

    async def _at_home(self, operation: Callable[..., Awaitable[T]], *args: Any) -> T:
        home = self._home
        if home is None or home is asyncio.get_running_loop() or not home.is_running():
            return await operation(*args)  # at home already, or no consumer anywhere yet

        async def call() -> T:
            return await operation(*args)

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(call(), home))

    async def receive(self, channel: str) -> Any:
        self._claim()
        return await super().receive(channel)

    async def group_add(self, group: str, channel: str) -> None:
        self._claim()
        await super().group_add(group, channel)

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        await self._at_home(super().send, channel, message)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        await self._at_home(super().group_send, group, message)

    async def group_discard(self, group: str, channel: str) -> None:
        await self._at_home(super().group_discard, group, channel)


def start_worker() -> Any:
    # The memory broker is polled (kombu's default: every second, per hop of a run's tasks);
    # polling an in-process queue is cheap, and a run then starts when it is asked for.
    app.conf.broker_transport_options = {
        **app.conf.broker_transport_options,
        "polling_interval": EMBEDDED_POLLING_SECONDS,
    }
    worker = app.WorkController(
        hostname=f"embedded@{socket.gethostname()}",
        pool_cls="threads",
        concurrency=settings.EMBEDDED_WORKER_THREADS,
        queues=[settings.CELERY_TASK_DEFAULT_QUEUE],
        without_heartbeat=True,
        without_mingle=True,
        without_gossip=True,
        loglevel=settings.LOG_LEVEL,
    )
    threading.Thread(target=worker.start, name="celery-worker", daemon=True).start()
    return worker


def start_beat() -> Any:
    beat = EmbeddedService(app, thread=True, scheduler_cls=settings.CELERY_BEAT_SCHEDULER)
    beat.start()
    return beat
