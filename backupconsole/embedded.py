"""The all-in-one process of embedded mode: Celery worker threads and the beat scheduler,
started beside the ASGI server, over the in-process ``memory://`` broker."""

from __future__ import annotations

import socket
import threading
from typing import Any

from celery.beat import EmbeddedService
from django.conf import settings

from backupconsole.celery import app


def start_worker() -> Any:
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
