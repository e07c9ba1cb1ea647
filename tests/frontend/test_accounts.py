"""Users, roles and API tokens in the console: administrators manage accounts, everyone their
own token; the last administrator cannot be removed; secrets are shown once."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from backupconsole import services
from backupconsole.errors import ActionRefused
from backupconsole.models import AuditEvent, RoleAssignment
from tests.frontend.conftest import PASSWORD

pytestmark = pytest.mark.django_db

User = get_user_model()
NEW_PASSWORD = "a fresh and quite long passphrase"


def can_log_in(username: str, password: str) -> bool:
    return Client().post("/login/", {"username": username, "password": password}).status_code == 302


def shown_once(html: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}" value="([^"]+)"', html)
    assert found, f"#{element_id} not on the page"
    return found.group(1)


def error_of(html: str, field_id: str) -> str:
    found = re.search(
        rf'<div class="invalid-feedback d-block" id="{field_id}_error">(.*?)</div>', html
    )
    return found.group(1) if found else ""


@pytest.fixture
def admin(logged_in: Any) -> Client:
    return logged_in("alice", "administrator")


def alice() -> Any:
    return User.objects.get(username="alice")


# --- who may manage users -------------------------------------------------------------------------


@pytest.mark.parametrize("role", [None, "viewer", "operator"])
def test_only_administrators_manage_users(logged_in: Any, new_user: Any, role: str | None) -> None:
    bob = new_user("bob", "viewer")
    client = logged_in("olga", role)

    assert client.get("/users/").status_code == 403
    assert client.get(f"/users/{bob.pk}/").status_code == 403
    forced = [
        client.post("/users/", {"username": "mallory", "password": NEW_PASSWORD}),
        client.post(f"/users/{bob.pk}/", {"action": "deactivate"}),
        client.post(f"/users/{bob.pk}/", {"action": "assign-role", "role-role": "administrator"}),
        client.post(
            f"/users/{bob.pk}/", {"action": "reset-password", "password-password": NEW_PASSWORD}
        ),
    ]
    assert [response.status_code for response in forced] == [403] * 4
    assert not User.objects.filter(username="mallory").exists()
    bob.refresh_from_db()
    assert bob.is_active and bob.check_password(PASSWORD)
    assert list(bob.role_assignments.values_list("role", flat=True)) == ["viewer"]
    home = client.get("/")
    assert "users" not in [item["key"] for item in home.context["nav_items"]]


def test_a_scoped_administrator_does_not_manage_users(logged_in: Any) -> None:
    client = logged_in("vic", "administrator", object_types=["inventory.virtualmachine"])

    assert client.get("/users/").status_code == 403


def test_administrator_sees_the_users_entry(admin: Client) -> None:
    response = admin.get("/")

    assert "users" in [item["key"] for item in response.context["nav_items"]]
    assert 'href="/users/"' in response.content.decode()


# --- the list -------------------------------------------------------------------------------------


def test_list_shows_users_with_their_roles_and_scopes(admin: Client, new_user: Any) -> None:
    new_user("bob", "viewer")
    new_user(
        "vera",
        "operator",
        object_types=["inventory.virtualmachine"],
        constraints={"tags__name": "web"},
    )
    carol = new_user("carol")
    carol.is_active = False
    carol.save()

    response = admin.get("/users/")

    assert response.status_code == 200
    html = response.content.decode()
    assert re.findall(r'<tr data-user="([^"]+)"', html) == ["alice", "bob", "carol", "vera"]
    vera = html.split('<tr data-user="vera"')[1]
    assert "Operator" in vera and "Virtual machine: tags__name=web" in vera
    carol_row = html.split('<tr data-user="carol"')[1].split("<tr data-user=")[0]
    assert "Deactivated" in carol_row and "No role" in carol_row
    assert 'id="user-form"' in html


def test_list_filters_with_the_api_filterset(admin: Client, new_user: Any) -> None:
    new_user("bob")
    new_user("bobby").__class__.objects.filter(username="bobby").update(is_active=False)
    new_user("carol")

    by_name = admin.get("/users/?username=bob", headers={"HX-Request": "true"})
    inactive = admin.get("/users/?is_active=false")

    html = by_name.content.decode()
    assert html.lstrip().startswith('<section id="user-results"')
    assert re.findall(r'<tr data-user="([^"]+)"', html) == ["bob", "bobby"]
    assert re.findall(r'<tr data-user="([^"]+)"', inactive.content.decode()) == ["bobby"]


# --- creating users -------------------------------------------------------------------------------


def test_create_user_with_a_password_and_role(admin: Client) -> None:
    response = admin.post(
        "/users/",
        {
            "username": "bob",
            "first_name": "Bob",
            "last_name": "Builder",
            "email": "bob@example.org",
            "role": "operator",
            "password": NEW_PASSWORD,
        },
    )

    bob = User.objects.get(username="bob")
    assert response.status_code == 302 and response["Location"] == f"/users/{bob.pk}/"
    assert (bob.get_full_name(), bob.email, bob.is_active) == (
        "Bob Builder",
        "bob@example.org",
        True,
    )
    assert list(bob.role_assignments.values_list("role", "object_types")) == [("operator", [])]
    assert can_log_in("bob", NEW_PASSWORD)
    created = AuditEvent.objects.get(action="core.user.create", object_id=str(bob.pk))
    assert created.username == "alice"
    assert created.after["password_set"] is True and "password" not in created.after
    assert NEW_PASSWORD not in str(created.after)


def test_create_user_checks_the_password_validators(admin: Client) -> None:
    response = admin.post("/users/", {"username": "bob", "password": "12345"})

    html = response.content.decode()
    assert response.status_code == 200
    assert "This password is too short" in error_of(html, "id_password")
    assert "This password is entirely numeric" in error_of(html, "id_password")
    assert re.search(r'<input[^>]*class="form-control is-invalid"[^>]*id="id_password"', html)
    assert 'value="12345"' not in html  # a password is never shown back
    assert 'value="bob"' in html  # the other input is kept
    assert not User.objects.filter(username="bob").exists()


def test_create_user_needs_a_password_or_generate(admin: Client) -> None:
    response = admin.post("/users/", {"username": "bob"})

    assert "Enter a password" in error_of(response.content.decode(), "id_password")
    assert not User.objects.filter(username="bob").exists()


def test_create_user_refuses_a_taken_name(admin: Client, new_user: Any) -> None:
    new_user("bob")

    response = admin.post("/users/", {"username": "bob", "password": NEW_PASSWORD})

    assert "already exists" in error_of(response.content.decode(), "id_username")
    assert User.objects.filter(username="bob").count() == 1


def test_generated_password_is_shown_once(admin: Client) -> None:
    response = admin.post("/users/", {"username": "bob", "generate": "on", "role": "viewer"})

    assert response.status_code == 200
    assert (
        response["Cache-Control"].startswith("max-age=0")
        and "no-store" in response["Cache-Control"]
    )
    password = shown_once(response.content.decode(), "user-password")
    assert len(password) >= 16
    assert can_log_in("bob", password)
    assert password not in admin.get("/users/").content.decode()
    bob = User.objects.get(username="bob")
    assert password not in admin.get(f"/users/{bob.pk}/").content.decode()
    assert list(bob.role_assignments.values_list("role", flat=True)) == ["viewer"]


# --- one user -------------------------------------------------------------------------------------


def test_user_page(admin: Client, new_user: Any) -> None:
    bob = new_user("bob", "viewer")

    response = admin.get(f"/users/{bob.pk}/")

    html = response.content.decode()
    assert response.status_code == 200
    assert 'id="role-form"' in html and 'id="password-form"' in html
    assert 'href="/audit/?username=bob"' in html
    assert admin.get("/users/999999/").status_code == 404


def test_deactivate_and_reactivate(admin: Client, new_user: Any) -> None:
    bob = new_user("bob", "viewer")

    response = admin.post(f"/users/{bob.pk}/", {"action": "deactivate"})

    assert response.status_code == 302
    bob.refresh_from_db()
    assert not bob.is_active
    assert not can_log_in("bob", PASSWORD)
    assert "Deactivated" in admin.get(f"/users/{bob.pk}/").content.decode()

    admin.post(f"/users/{bob.pk}/", {"action": "reactivate"})

    bob.refresh_from_db()
    assert bob.is_active and can_log_in("bob", PASSWORD)
    actions = AuditEvent.objects.filter(object_id=str(bob.pk), action__startswith="core.user.")
    assert sorted(actions.values_list("action", flat=True)) == [
        "core.user.deactivate",
        "core.user.reactivate",
    ]


def test_an_administrator_cannot_deactivate_themself(admin: Client, new_user: Any) -> None:
    new_user("root", "administrator")  # so the last-administrator rule is not what refuses

    response = admin.post(f"/users/{alice().pk}/", {"action": "deactivate"}, follow=True)

    assert "You cannot deactivate your own account." in response.content.decode()
    assert alice().is_active


def test_reset_password_typed_and_generated(admin: Client, new_user: Any) -> None:
    bob = new_user("bob", "viewer")

    weak = admin.post(f"/users/{bob.pk}/", {"action": "reset-password", "password-password": "bob"})
    assert "too short" in error_of(weak.content.decode(), "id_password-password")
    typed = admin.post(
        f"/users/{bob.pk}/", {"action": "reset-password", "password-password": NEW_PASSWORD}
    )
    assert typed.status_code == 302 and can_log_in("bob", NEW_PASSWORD)

    generated = admin.post(
        f"/users/{bob.pk}/", {"action": "reset-password", "password-generate": "on"}
    )

    password = shown_once(generated.content.decode(), "user-password")
    assert can_log_in("bob", password) and not can_log_in("bob", NEW_PASSWORD)
    assert password not in admin.get(f"/users/{bob.pk}/").content.decode()
    assert AuditEvent.objects.filter(action="core.user.password_reset").count() == 2


def test_assign_a_scoped_role_and_remove_it(admin: Client, new_user: Any) -> None:
    bob = new_user("bob")

    response = admin.post(
        f"/users/{bob.pk}/",
        {
            "action": "assign-role",
            "role-role": "operator",
            "role-object_types": ["inventory.virtualmachine", "inventory.connection"],
            "role-constraints": '{"name__startswith": "web-"}',
        },
    )

    assert response.status_code == 302
    assignment = bob.role_assignments.get()
    assert (assignment.role, assignment.object_types, assignment.constraints) == (
        "operator",
        ["inventory.virtualmachine", "inventory.connection"],
        {"name__startswith": "web-"},
    )
    page = admin.get(f"/users/{bob.pk}/").content.decode()
    assert "Virtual machine, Connection: name__startswith=web-" in page

    admin.post(f"/users/{bob.pk}/", {"action": "revoke-role", "assignment": assignment.pk})

    assert not bob.role_assignments.exists()
    assert AuditEvent.objects.filter(action="core.role.revoke", username="alice").count() == 1


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"role-constraints": '{"name": "x"}'}, "id_role-constraints", "need object types"),
        (
            {"role-object_types": "inventory.virtualmachine", "role-constraints": '{"nope": 1}'},
            "id_role-constraints",
            "Not a valid lookup on inventory.virtualmachine",
        ),
        ({"role-constraints": "{not json"}, "id_role-constraints", "Enter a valid JSON"),
        ({"role-object_types": "inventory.virtualdisk"}, "id_role-object_types", "valid choice"),
    ],
)
def test_role_errors_are_shown_next_to_the_field(
    admin: Client, new_user: Any, fields: dict[str, str], field: str, message: str
) -> None:
    bob = new_user("bob")

    response = admin.post(
        f"/users/{bob.pk}/", {"action": "assign-role", "role-role": "viewer", **fields}
    )

    assert response.status_code == 200
    assert message in error_of(response.content.decode(), field)
    assert not bob.role_assignments.exists()


def test_a_role_of_another_user_is_not_removed_through_this_page(
    admin: Client, new_user: Any
) -> None:
    bob = new_user("bob", "viewer")
    carol = new_user("carol", "viewer")

    response = admin.post(
        f"/users/{bob.pk}/",
        {"action": "revoke-role", "assignment": carol.role_assignments.get().pk},
    )

    assert response.status_code == 404
    assert carol.role_assignments.exists()


def test_unknown_action_is_refused(admin: Client, new_user: Any) -> None:
    bob = new_user("bob")

    assert admin.post(f"/users/{bob.pk}/", {"action": "delete"}).status_code == 400


# --- the last administrator -----------------------------------------------------------------------


def test_service_refuses_to_remove_the_last_administrator(new_user: Any) -> None:
    alice = new_user("alice", "administrator")
    bob = new_user("bob", "administrator")
    carol = new_user("carol", "administrator", object_types=["inventory.virtualmachine"])

    services.revoke_role(bob.role_assignments.get(), acting_user=alice)

    with pytest.raises(ActionRefused, match="no administrator"):
        services.revoke_role(alice.role_assignments.get(), acting_user=alice)
    with pytest.raises(ActionRefused, match="no administrator"):
        services.set_user_active(alice, False, acting_user=None)
    # A scoped administrator does not administer accounts, so it may go at any time.
    services.revoke_role(carol.role_assignments.get(), acting_user=alice)
    alice.refresh_from_db()
    assert alice.is_active and alice.role_assignments.filter(role="administrator").exists()


def test_an_inactive_administrator_does_not_count(new_user: Any) -> None:
    alice = new_user("alice", "administrator")
    bob = new_user("bob", "administrator")
    services.set_user_active(bob, False, acting_user=alice)

    with pytest.raises(ActionRefused):
        services.revoke_role(alice.role_assignments.get(), acting_user=alice)
    # The inactive one's role can go: it administers nothing.
    services.revoke_role(bob.role_assignments.get(), acting_user=alice)


def test_a_superuser_counts_as_an_administrator(new_user: Any) -> None:
    alice = new_user("alice", "administrator")
    root, _ = services.ensure_administrator(username="root", password=NEW_PASSWORD)

    services.revoke_role(alice.role_assignments.get(), acting_user=root)

    with pytest.raises(ActionRefused):
        services.set_user_active(root, False, acting_user=None)


def test_without_any_administrator_other_changes_go_ahead(new_user: Any) -> None:
    bob = new_user("bob", "viewer")

    services.set_user_active(bob, False, acting_user=None)
    services.revoke_role(bob.role_assignments.get(), acting_user=None)

    bob.refresh_from_db()
    assert not bob.is_active and not bob.role_assignments.exists()


def test_page_and_api_report_the_last_administrator_rule(admin: Client) -> None:
    assignment = alice().role_assignments.get()

    response = admin.post(
        f"/users/{alice().pk}/", {"action": "revoke-role", "assignment": assignment.pk}, follow=True
    )

    assert "This would leave no administrator" in response.content.decode()
    assert RoleAssignment.objects.filter(pk=assignment.pk).exists()
    api = APIClient()
    api.force_authenticate(alice())
    refused = api.delete(f"/api/core/role-assignments/{assignment.pk}/")
    assert refused.status_code == 400
    assert "no administrator" in refused.json()["non_field_errors"][0]
    assert not AuditEvent.objects.filter(action="core.role.revoke").exists()


def test_service_validates_scopes(new_user: Any) -> None:
    bob = new_user("bob")

    with pytest.raises(ValidationError) as unknown:
        services.assign_role(user=bob, role="viewer", object_types=["nope.model"], acting_user=None)
    with pytest.raises(ValidationError) as bad_value:
        services.assign_role(
            user=bob,
            role="viewer",
            object_types=["inventory.connection"],
            constraints={"port": "not a number"},
            acting_user=None,
        )

    assert "Unknown object type: nope.model" in unknown.value.message_dict["object_types"][0]
    assert "port" in bad_value.value.message_dict["constraints"][0]
    assert not bob.role_assignments.exists()


# --- API tokens -----------------------------------------------------------------------------------


def api_accepts(key: str) -> bool:
    response = APIClient().get("/api/core/users/", HTTP_AUTHORIZATION=f"Token {key}")
    assert response.status_code in (200, 401, 403)
    return response.status_code == 200


def test_token_secret_is_shown_once(logged_in: Any, caplog: pytest.LogCaptureFixture) -> None:
    client = logged_in("bob", "viewer")
    page = client.get("/tokens/").content.decode()
    assert 'id="token-form"' in page and "You have no API token" in page

    with caplog.at_level(logging.DEBUG):
        response = client.post("/tokens/", {"action": "create"})

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    key = shown_once(response.content.decode(), "token-secret")
    assert Token.objects.get(user__username="bob").key == key
    assert api_accepts(key)
    assert key not in caplog.text
    later = client.get("/tokens/").content.decode()
    assert key not in later and 'id="token-secret"' not in later
    assert "You have a token, created" in later
    assert AuditEvent.objects.filter(action="core.token.create", username="bob").count() == 1


def test_replacing_a_token_revokes_the_old_one(logged_in: Any) -> None:
    client = logged_in("bob", "viewer")
    first = shown_once(
        client.post("/tokens/", {"action": "create"}).content.decode(), "token-secret"
    )

    second = shown_once(
        client.post("/tokens/", {"action": "create"}).content.decode(), "token-secret"
    )

    assert first != second
    assert not api_accepts(first) and api_accepts(second)
    assert AuditEvent.objects.filter(action="core.token.rotate").count() == 1


def test_revoke_own_token(logged_in: Any) -> None:
    client = logged_in("bob", "viewer")
    key = shown_once(client.post("/tokens/", {"action": "create"}).content.decode(), "token-secret")

    response = client.post("/tokens/", {"action": "revoke"}, follow=True)

    assert "was revoked" in response.content.decode()
    assert not api_accepts(key)
    assert not Token.objects.filter(user__username="bob").exists()
    assert AuditEvent.objects.filter(action="core.token.revoke", username="bob").count() == 1


def test_a_user_sees_and_revokes_only_their_own_token(logged_in: Any, new_user: Any) -> None:
    carol = new_user("carol", "operator")
    carols = services.rotate_token(carol, acting_user=carol)
    client = logged_in("bob", "operator")

    page = client.get("/tokens/").content.decode()
    forced = client.post("/tokens/", {"action": "revoke", "user": carol.pk})

    assert "carol" not in page and 'id="token-table"' not in page
    assert forced.status_code == 403
    assert Token.objects.filter(key=carols.key).exists()


def test_administrator_sees_and_revokes_anyones_token(admin: Client, new_user: Any) -> None:
    carol = new_user("carol", "viewer")
    carols = services.rotate_token(carol, acting_user=carol)

    page = admin.get("/tokens/").content.decode()
    users_page = admin.get("/users/").content.decode()
    carol_page = admin.get(f"/users/{carol.pk}/").content.decode()
    response = admin.post("/tokens/", {"action": "revoke", "user": carol.pk})

    assert 'id="token-table"' in page and '<tr data-user="carol"' in page
    for html in (page, users_page, carol_page):
        assert carols.key not in html  # a key never appears after its creation
    assert response.status_code == 302
    assert not Token.objects.filter(user=carol).exists()
    revoked = AuditEvent.objects.get(action="core.token.revoke")
    assert (revoked.username, revoked.object_id) == ("alice", str(carol.pk))


def test_no_one_creates_a_token_for_someone_else(admin: Client, new_user: Any) -> None:
    carol = new_user("carol", "viewer")

    admin.post("/tokens/", {"action": "create", "user": carol.pk})

    assert not Token.objects.filter(user=carol).exists()
    assert Token.objects.filter(user=alice()).exists()


def test_tokens_page_needs_sign_in(client: Client) -> None:
    assert client.get("/tokens/").status_code == 302
    assert client.post("/tokens/", {"action": "create"}).status_code == 302
    assert not Token.objects.exists()
