"""A worker bootstep that registers the worker as a backup proxy and keeps its heartbeat fresh.

It works for `celery worker` processes (production proxies) and for the embedded worker thread
alike. Models are imported lazily: this module is loaded while the Celery app is configured.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import bootsteps

from backupconsole import __version__

logger = logging.getLogger(__name__)


def _beat(worker: Any) -> None:
    from django.conf import settings
    from django.db import close_old_connections

    from inventory.services import record_heartbeat

    queues = sorted(worker.app.amqp.queues.consume_from or {settings.CELERY_TASK_DEFAULT_QUEUE})
    # A proxy's own queue is the one that is not the shared console queue.
    own = [q for q in queues if q != settings.CELERY_TASK_DEFAULT_QUEUE] or queues
    name = os.environ.get("BACKUPCONSOLE_PROXY_NAME") or worker.hostname
    close_old_connections()
    try:
        record_heartbeat(name=name, queue=own[0], hostname=worker.hostname, version=__version__)
    except Exception:
        # A database hiccup must not kill the worker; the next beat tries again.
        logger.exception("proxy heartbeat failed")
    finally:
        close_old_connections()


class ProxyHeartbeat(bootsteps.StartStopStep):
    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.tref: Any = None

    def start(self, worker: Any) -> None:
        from django.conf import settings

        _beat(worker)
        self.tref = worker.timer.call_repeatedly(
            settings.PROXY_HEARTBEAT_SECONDS, _beat, (worker,), priority=10
        )

    def stop(self, worker: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None
