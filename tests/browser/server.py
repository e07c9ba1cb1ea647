"""The console under test: the project's ASGI application (HTTP + Channels websockets) served by
uvicorn in a subprocess that uses the pytest-django test database and the Redis channel layer,
as a production console does."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from django.conf import settings
from django.db import connection

from tests.processes import stop

ROOT = Path(__file__).resolve().parents[2]
ASYNC_UNSAFE = "DJANGO_ALLOW_ASYNC_UNSAFE"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def server_environment(data_dir: Path) -> dict[str, str]:
    """The pytest process's settings for the server: the *test* database (the rows tests make
    are visible to it), the same keys (credentials the tests store decrypt there; sessions made
    here are valid there) and the Redis channel layer from REDIS_URL."""
    database = connection.settings_dict
    inherited = {name: value for name, value in os.environ.items() if name != ASYNC_UNSAFE}
    return {
        **inherited,
        "DATABASE_URL": (
            f"postgres://{database['USER'] or 'postgres'}@{database['HOST'] or '127.0.0.1'}:"
            f"{database['PORT'] or 5432}/{database['NAME']}"
        ),
        "BACKUPCONSOLE_DATA_DIR": str(data_dir),
        "BACKUPCONSOLE_SECRET_KEY": settings.SECRET_KEY,
        "BACKUPCONSOLE_CREDENTIAL_KEYS": ",".join(settings.CREDENTIAL_KEYS),
    }


class ConsoleServer:
    """``uvicorn backupconsole.asgi:application`` on 127.0.0.1:<free port>."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data_dir / "uvicorn.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> ConsoleServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as log:
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "backupconsole.asgi:application",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--lifespan",
                    "off",
                    "--log-level",
                    "warning",
                ],
                cwd=ROOT,
                env=server_environment(self.data_dir),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"the console server exited:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/login/", timeout=2) as response:  # noqa: S310
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the console server did not answer within {timeout:.0f} s")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        stop(process, timeout=15)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""
