"""Shared fixtures. Under CI=true the suite needs PostgreSQL and Redis and stops, never skips,
when either is missing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from tests.unavailable import IN_CI

# Real `celery worker` processes, for tests/integration and tests/kvm.
pytest_plugins = ["tests.integration.workers"]


def pytest_sessionstart(session: pytest.Session) -> None:
    problems = []
    engine = settings.DATABASES["default"]["ENGINE"]
    if IN_CI and engine != "django.db.backends.postgresql":
        problems.append(f"CI runs on PostgreSQL; DATABASE_URL gives {engine}.")
    if IN_CI and not settings.REDIS_URL:
        problems.append("CI runs with Redis; REDIS_URL is not set.")
    if settings.REDIS_URL:
        import redis

        try:
            redis.Redis.from_url(settings.REDIS_URL, socket_timeout=3).ping()
        except redis.RedisError as exc:
            problems.append(f"Redis at {settings.REDIS_URL} does not answer: {exc}")
    if problems:
        pytest.exit("Test services missing:\n" + "\n".join(problems), returncode=3)


@pytest.fixture
def make_user(db: Any) -> Callable[..., Any]:
    from django.contrib.auth import get_user_model

    from backupconsole.services import assign_role

    def make(username: str, role: str | None = None, **assignment: Any) -> Any:
        user = get_user_model().objects.create_user(username=username, password="pw-" + username)
        if role:
            assign_role(user=user, role=role, acting_user=None, **assignment)
        return user

    return make


@pytest.fixture
def admin_user(make_user: Callable[..., Any]) -> Any:
    return make_user("alice", "administrator")


@pytest.fixture
def api(admin_user: Any) -> APIClient:
    """An API client logged in as an administrator."""
    client = APIClient()
    client.force_authenticate(admin_user)
    return client


@pytest.fixture
def api_as(make_user: Callable[..., Any]) -> Callable[..., APIClient]:
    def make(username: str, role: str | None = None, **assignment: Any) -> APIClient:
        client = APIClient()
        client.force_authenticate(make_user(username, role, **assignment))
        return client

    return make
