"""The console shell: sign-in, sign-out, the landing page and its row-level permissions."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser
from django.contrib.staticfiles import finders
from django.test import Client, RequestFactory

from frontend.context_processors import navigation
from inventory.models import Connection
from tests.frontend.conftest import PASSWORD

pytestmark = pytest.mark.django_db

ESTATE_NAMES = ("kvm-lab-01", "repo-primary", "nightly-gold")


def nav_keys(response: Any) -> list[str]:
    return [item["key"] for item in response.context["nav_items"]]


def is_logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


# --- login ---------------------------------------------------------------------------------------


def test_login_page_renders_labelled_fields(client: Client) -> None:
    response = client.get("/login/")

    assert response.status_code == 200
    html = response.content.decode()
    assert '<meta name="viewport"' in html
    assert '<label class="form-label" for="id_username">Username</label>' in html
    assert '<label class="form-label" for="id_password">Password</label>' in html
    assert re.search(r'<input type="text" name="username"[^>]*id="id_username"', html)
    assert re.search(r'<input type="password" name="password"[^>]*id="id_password"', html)
    assert 'name="csrfmiddlewaretoken"' in html
    # No navigation or logout button for an anonymous visitor.
    assert response.context["nav_items"] == []
    assert 'action="/logout/"' not in html


def test_wrong_password_shows_error_and_does_not_log_in(client: Client, new_user: Any) -> None:
    new_user("bob", "viewer")

    response = client.post("/login/", {"username": "bob", "password": "not-the-password"})

    assert response.status_code == 200
    html = response.content.decode()
    errors = html.index('id="login-errors"')
    assert "Please enter a correct username and password" in html[errors:]
    assert errors < html.index("<form"), "non-field errors are shown above the form"
    assert not is_logged_in(client)
    assert client.get("/").status_code == 302


def test_missing_field_error_is_shown_next_to_the_field(client: Client) -> None:
    response = client.post("/login/", {"username": "", "password": "x"})

    html = response.content.decode()
    assert re.search(r'<input[^>]*class="form-control is-invalid"[^>]*id="id_username"', html)
    assert re.search(r'aria-describedby="id_username_error"', html)
    feedback = re.search(
        r'<div class="invalid-feedback" id="id_username_error">\s*(.*?)\s*</div>', html
    )
    assert feedback and feedback.group(1) == "This field is required."
    assert 'id="id_password_error"' not in html
    assert not is_logged_in(client)


def test_correct_login_redirects_to_home(client: Client, new_user: Any) -> None:
    user = new_user("bob", "viewer")

    response = client.post("/login/", {"username": "bob", "password": PASSWORD})

    assert response.status_code == 302
    assert response["Location"] == "/"
    assert client.session["_auth_user_id"] == str(user.pk)
    home = client.get("/")
    assert home.status_code == 200
    assert home.context["user"] == user
    assert "bob" in home.content.decode()


def test_login_honours_next(client: Client, new_user: Any) -> None:
    new_user("bob", "viewer")

    response = client.post(
        "/login/?next=/api/docs/", {"username": "bob", "password": PASSWORD, "next": "/api/docs/"}
    )

    assert response.status_code == 302
    assert response["Location"] == "/api/docs/"


def test_anonymous_home_redirects_to_login(client: Client) -> None:
    response = client.get("/")

    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/"


# --- logout --------------------------------------------------------------------------------------


def test_logout_by_post(logged_in: Any) -> None:
    client = logged_in("bob", "viewer")
    home = client.get("/").content.decode()
    assert re.search(r'<form method="post" action="/logout/"', home)

    response = client.post("/logout/")

    assert response.status_code == 302
    assert response["Location"] == "/login/"
    assert not is_logged_in(client)
    assert client.get("/")["Location"] == "/login/?next=/"


def test_logout_by_get_is_refused(logged_in: Any) -> None:
    client = logged_in("bob", "viewer")

    assert client.get("/logout/").status_code == 405
    assert is_logged_in(client)


# --- the landing page ----------------------------------------------------------------------------


def test_home_shows_the_viewers_rows_and_navigation(logged_in: Any, estate: dict[str, Any]) -> None:
    client = logged_in("bob", "viewer")

    response = client.get("/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "repo-primary" in html
    assert [usage.repository for usage in response.context["repositories"].rows] == [
        estate["repository"]
    ]
    assert nav_keys(response) == [
        "home",
        "inventory",
        "policies",
        "runs",
        "repositories",
        "proxies",
        "audit",
        "api-docs",
    ]
    assert 'href="/api/docs/"' in html
    assert "no role yet" not in html


def test_home_with_no_role_shows_nothing(logged_in: Any, estate: dict[str, Any]) -> None:
    client = logged_in("carol")

    response = client.get("/")

    assert response.status_code == 200
    html = response.content.decode()
    for name in ESTATE_NAMES:
        assert name not in html
    assert nav_keys(response) == ["home", "api-docs"]
    for label in ("Inventory", "Policies", "Runs", "Repositories", "Proxies", "Audit log"):
        assert label not in html
    assert "no role yet" in html


def test_scoped_role_sees_only_its_pages(logged_in: Any, estate: dict[str, Any]) -> None:
    Connection.objects.create(name="esxi-secret", kind="esxi", address="10.0.0.9", port=443)
    client = logged_in(
        "dave",
        "viewer",
        object_types=["inventory.connection"],
        constraints={"name__startswith": "kvm-"},
    )

    response = client.get("/")

    html = response.content.decode()
    for name in ("esxi-secret", "nightly-gold", "repo-primary"):
        assert name not in html
    assert nav_keys(response) == ["home", "inventory", "api-docs"]
    # A role that covers no dashboard card is not mistaken for no role at all.
    assert "no role yet" not in html
    assert "Nothing on the dashboard falls within your role" in html


# --- shell ---------------------------------------------------------------------------------------


def test_navigation_is_empty_for_anonymous_users() -> None:
    request = RequestFactory().get("/")
    request.user = AnonymousUser()

    assert navigation(request) == {"nav_items": []}


def test_pages_use_vendored_static_files(logged_in: Any) -> None:
    html = logged_in("bob", "viewer").get("/").content.decode()

    referenced = re.findall(r'(?:href|src)="/static/([^"]+)"', html)
    assert set(referenced) >= {
        "vendor/bootstrap/css/bootstrap.min.css",
        "vendor/bootstrap/js/bootstrap.bundle.min.js",
        "vendor/bootstrap-icons/bootstrap-icons.min.css",
        "vendor/htmx/htmx.min.js",
        "vendor/htmx-ext-ws/ws.js",
        "frontend/console.css",
        "frontend/console.js",
    }
    for path in referenced:
        assert finders.find(path), f"{path} is not a static file"
    assert "//cdn" not in html and "https://" not in html
    assert finders.find("vendor/bootstrap-icons/fonts/bootstrap-icons.woff2")
