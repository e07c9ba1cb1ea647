"""Websocket routes of the runs pages (included by backupconsole/routing.py)."""

from __future__ import annotations

from django.urls import path

from . import sockets
from .consumers import RunningRunsConsumer, RunPageConsumer, RunRowsConsumer

websocket_urlpatterns = [
    path(sockets.RUN_PAGE, RunPageConsumer.as_asgi()),
    path(sockets.ROWS, RunRowsConsumer.as_asgi()),
    path(sockets.RUNNING, RunningRunsConsumer.as_asgi()),
]
