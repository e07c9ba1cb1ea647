"""Websocket paths of the runs pages, for the routing and for the pages that connect to them.

They sit under ``/ws/console/`` so the JSON API's ``/ws/runs/<pk>/`` and ``/ws/events/`` stay
as they are.
"""

from __future__ import annotations

RUN_PAGE = "ws/console/runs/<int:pk>/"
ROWS = "ws/console/events/"
RUNNING = "ws/console/running/"


def run_socket(pk: int) -> str:
    return f"/ws/console/runs/{pk}/"


def rows_socket(pks: list[int]) -> str:
    """The list rows' socket; it sends only these runs' rows."""
    return f"/{ROWS}?runs=" + ",".join(str(pk) for pk in pks)


def running_socket() -> str:
    return f"/{RUNNING}"
