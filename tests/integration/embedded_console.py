"""The console as `make run` starts it: ``manage.py migrate`` then ``manage.py runconsole`` in
embedded mode (no DATABASE_URL, REDIS_URL or CELERY_BROKER_URL: SQLite in the data directory,
Celery worker threads and beat in the process, the in-memory channel layer)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import requests

from tests.browser.server import ASYNC_UNSAFE, ROOT, ConsoleServer

T = TypeVar("T")
# What would turn the process into something else than `make run` on a fresh machine.
NOT_INHERITED = (
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "BACKUPCONSOLE_MODE",
    "BACKUPCONSOLE_SECRET_KEY",
    "BACKUPCONSOLE_CREDENTIAL_KEYS",
    ASYNC_UNSAFE,
)


class Api:
    """``requests`` against the console, with the API token when it has one."""

    def __init__(self, base_url: str, token: str | None = None) -> None:
        self.base_url = base_url
        self.http = requests.Session()
        self.http.trust_env = False  # no proxy from the environment for 127.0.0.1
        if token:
            self.http.headers["Authorization"] = f"Token {token}"

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.http.get(self.base_url + path, timeout=30, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.http.post(self.base_url + path, timeout=30, **kwargs)


class EmbeddedConsole(ConsoleServer):
    """``with EmbeddedConsole(data_dir) as console:`` the console on 127.0.0.1:<free port>,
    administrator ``admin`` with ``console.password`` (stopped as ConsoleServer stops)."""

    def __init__(self, data_dir: Path, *, password: str = "embedded-Admin-pw-1") -> None:
        super().__init__(data_dir)
        self.password = password
        self.log = data_dir / "runconsole.log"
        self._token: str | None = None

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
        env["BACKUPCONSOLE_DATA_DIR"] = str(self.data_dir)
        env["BACKUPCONSOLE_ADMIN_PASSWORD"] = self.password
        return env

    def start(self, timeout: float = 60) -> EmbeddedConsole:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        manage = [sys.executable, "manage.py"]
        migrated = subprocess.run(
            [*manage, "migrate", "--noinput"],
            cwd=ROOT,
            env=self.environment(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if migrated.returncode:
            raise RuntimeError(f"manage.py migrate failed:\n{migrated.stdout}{migrated.stderr}")
        with self.log.open("wb") as log:
            self._process = subprocess.Popen(
                [*manage, "runconsole", "--port", str(self.port)],
                cwd=ROOT,
                env=self.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            self.wait_for(self._answers, "the console to answer", timeout=timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _answers(self) -> bool:
        try:
            return Api(self.url).get("/login/").status_code == 200
        except requests.ConnectionError:
            return False

    def __enter__(self) -> EmbeddedConsole:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def token(self) -> str:
        """The administrator's API token, asked for over HTTP as a client would."""
        if self._token is None:
            response = Api(self.url).post(
                "/api/auth/token/", json={"username": "admin", "password": self.password}
            )
            assert response.status_code == 200, response.text
            self._token = str(response.json()["token"])
        return self._token

    def api(self) -> Api:
        return Api(self.url, self.token)

    def ws_url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def wait_for(self, probe: Callable[[], T | None], what: str, timeout: float = 60) -> T:
        """Poll ``probe`` until it returns something truthy; fail with the server's log."""
        deadline = time.monotonic() + timeout
        while True:
            if self._process is not None and self._process.poll() is not None:
                raise AssertionError(
                    f"the console exited while waiting for {what}:\n{self.log_tail()}"
                )
            found = probe()
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.3)
