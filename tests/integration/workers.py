"""Fixtures that start real Celery worker processes against Redis and the test database."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

from tests.processes import stop

ROOT = Path(__file__).resolve().parents[2]


def _require_services() -> None:
    missing = []
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        missing.append("PostgreSQL (DATABASE_URL)")
    if not settings.REDIS_URL:
        missing.append("Redis (REDIS_URL)")
    if not settings.CELERY_BROKER_URL.startswith(("redis://", "amqp://")):
        missing.append("a Celery broker (CELERY_BROKER_URL)")
    if missing:
        # Integration tests prove behaviour across processes; without the services there is
        # nothing to prove, and a silent skip would hide that. `make test` sets them up.
        pytest.fail("integration tests need " + ", ".join(missing) + "; run them via `make test`")


def _process_env(tmp_path: Path) -> dict[str, str]:
    """What a worker or beat process needs to share the test database and broker."""
    database = connection.settings_dict
    return {
        **os.environ,
        "DATABASE_URL": (
            f"postgres://{database['USER'] or 'postgres'}@{database['HOST'] or '127.0.0.1'}:"
            f"{database['PORT'] or 5432}/{database['NAME']}"
        ),
        "BACKUPCONSOLE_DATA_DIR": str(tmp_path),
        "BACKUPCONSOLE_CREDENTIAL_KEYS": ",".join(settings.CREDENTIAL_KEYS),
        "BACKUPCONSOLE_PROXY_HEARTBEAT_SECONDS": "5",
    }


@pytest.fixture
def celery_worker_process(
    transactional_db: Any, tmp_path: Path
) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start `celery worker` processes consuming a named proxy queue; stopped afterwards."""
    _require_services()
    import redis

    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
    env = _process_env(tmp_path)
    started: list[subprocess.Popen[str]] = []

    def start(name: str, *, also: tuple[str, ...] = ()) -> subprocess.Popen[str]:
        """A worker consuming the proxy queue ``name`` and the queues in ``also``."""
        log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "backupconsole",
                "worker",
                "-Q",
                ",".join((name, *also)),
                "-n",
                f"{name}@%h",
                "--pool",
                "threads",
                "-c",
                "2",
                "--without-mingle",
                "--without-gossip",
                "-l",
                "INFO",
            ],
            cwd=ROOT,
            env={**env, "BACKUPCONSOLE_PROXY_NAME": name},
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        started.append(process)
        _wait_for_heartbeat(name, process, tmp_path / f"{name}.log")
        return process

    yield start
    stop(started)


@pytest.fixture
def celery_beat_process(
    celery_worker_process: Any, tmp_path: Path
) -> Iterator[Callable[[], subprocess.Popen[str]]]:
    """Start `celery beat` with the production DatabaseScheduler, looking for due schedules
    every second (production: BACKUPCONSOLE_SCHEDULE_TICK_SECONDS, default 20)."""
    env = {**_process_env(tmp_path), "BACKUPCONSOLE_SCHEDULE_TICK_SECONDS": "1"}
    started: list[subprocess.Popen[str]] = []

    def start() -> subprocess.Popen[str]:
        log = open(tmp_path / "beat.log", "w")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "backupconsole",
                "beat",
                "--scheduler",
                settings.CELERY_BEAT_SCHEDULER,
                "--pidfile",
                str(tmp_path / "beat.pid"),
                "-l",
                "INFO",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        started.append(process)
        return process

    yield start
    stop(started)


def _wait_for_heartbeat(name: str, process: subprocess.Popen[str], log: Path) -> None:
    from inventory.models import Proxy

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if Proxy.objects.filter(name=name, last_heartbeat__isnull=False).exists():
            return
        if process.poll() is not None:
            pytest.fail(f"celery worker {name} exited:\n{log.read_text()[-3000:]}")
        time.sleep(0.3)
    pytest.fail(f"celery worker {name} did not register within 90 s:\n{log.read_text()[-3000:]}")
