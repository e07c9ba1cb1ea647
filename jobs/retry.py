"""Retries with backoff, for named transient errors only (a dropped connection, a hypervisor
that did not answer in time). Anything else fails at once: retrying a bug only hides it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

TRANSIENT: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)


def with_retries(
    action: Callable[[], T],
    *,
    attempts: int = 3,
    base_delay: float = 2.0,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``action``; on a transient error wait 2, 4, 8 … s and try again, ``attempts`` in all."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except TRANSIENT as exc:
            if attempt == attempts:
                raise
            delay = base_delay * 2 ** (attempt - 1)
            if on_retry is not None:
                on_retry(attempt, exc, delay)
            sleep(delay)
    raise AssertionError("unreachable")
