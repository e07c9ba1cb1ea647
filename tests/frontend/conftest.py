"""Fixtures for the console page tests: users with a role (or none) and rows made with the ORM."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from backupconsole.services import assign_role
from inventory.models import Connection
from jobs.models import ProtectionPolicy
from storage.models import Repository

PASSWORD = "correct horse battery staple"


@pytest.fixture
def new_user(db: Any) -> Callable[..., Any]:
    """``new_user("bob", "viewer")``; extra keywords (object_types, constraints) scope the role."""

    def make(username: str, role: str | None = None, **assignment: Any) -> Any:
        user = get_user_model().objects.create_user(username=username, password=PASSWORD)
        if role:
            assign_role(user=user, role=role, acting_user=None, **assignment)
        return user

    return make


@pytest.fixture
def logged_in(client: Client, new_user: Callable[..., Any]) -> Callable[..., Client]:
    """Logs ``client`` in through the login form as a new user with the given role."""

    def login(username: str, role: str | None = None, **assignment: Any) -> Client:
        new_user(username, role, **assignment)
        response = client.post("/login/", {"username": username, "password": PASSWORD})
        assert response.status_code == 302, "login failed"
        return client

    return login


@pytest.fixture
def estate(db: Any) -> dict[str, Any]:
    """A connection, a repository and a policy writing to it."""
    connection = Connection.objects.create(
        name="kvm-lab-01", kind="kvm", address="127.0.0.1", port=22
    )
    repository = Repository.objects.create(
        name="repo-primary", kind="filesystem", location="/srv/backups/repo-primary"
    )
    policy = ProtectionPolicy.objects.create(name="nightly-gold", repository=repository)
    return {"connection": connection, "repository": repository, "policy": policy}
