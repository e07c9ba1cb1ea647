"""``manage.py runconsole``: the console's all-in-one process (``make run``).

Serves the ASGI application (HTTP and websockets) with uvicorn and, in embedded mode, runs the
Celery worker threads and the scheduler in the same process.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

import uvicorn
from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from backupconsole.services import ensure_administrator


class Command(BaseCommand):
    help = "Start the console (web server, and in embedded mode the worker and scheduler)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--no-worker", action="store_true", help="Web server only.")

    def handle(self, *args: Any, host: str, port: int, no_worker: bool, **options: Any) -> None:
        self._bootstrap_admin()
        if settings.EMBEDDED and not no_worker:
            from backupconsole.embedded import start_beat, start_worker

            start_worker()
            start_beat()
            self.stdout.write("Worker threads and scheduler started (embedded mode).")
        self.stdout.write(f"Console: http://{host}:{port}/  (API docs: /api/docs/)")
        uvicorn.run(
            "backupconsole.asgi:application",
            host=host,
            port=port,
            log_level=settings.LOG_LEVEL.lower(),
            lifespan="off",
        )

    def _bootstrap_admin(self) -> None:
        username = os.environ.get("BACKUPCONSOLE_ADMIN_USER", "admin")
        given = os.environ.get("BACKUPCONSOLE_ADMIN_PASSWORD")
        password = given or secrets.token_urlsafe(12)
        _, created = ensure_administrator(username=username, password=password)
        if created and not given:
            # Printed once, on first start only: it is not stored anywhere in clear text.
            self.stdout.write(
                self.style.WARNING(
                    f"Created administrator '{username}' with password: {password}\n"
                    "Change it after logging in; it will not be shown again."
                )
            )
        elif created:
            self.stdout.write(f"Created administrator '{username}' (password from environment).")
