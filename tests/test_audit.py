import pytest

from backupconsole.models import AuditEvent

pytestmark = pytest.mark.django_db


def test_audit_records_client_address_and_is_filterable(admin_user, client, make_user):
    client.force_login(admin_user)
    client.post(
        "/api/inventory/connections/",
        {"name": "h", "kind": "kvm", "address": "127.0.0.1", "skip_test": True},
        content_type="application/json",
        REMOTE_ADDR="192.0.2.10",
    )
    event = AuditEvent.objects.get(action="inventory.connection.create")
    assert event.client_address == "192.0.2.10" and event.username == "alice"
    listed = client.get("/api/core/audit-events/?action=inventory.connection").json()
    # Newest first: creating the connection also requested its first inventory sync.
    assert [e["action"] for e in listed["results"]] == [
        "inventory.connection.sync_request",
        "inventory.connection.create",
    ]
    assert listed["results"][0]["object_type"] == "connection"


def test_only_administrators_manage_roles(admin_user, api, api_as, make_user):
    bob = make_user("bob")
    operator = api_as("olga", "operator")
    body = {"user": bob.pk, "role": "viewer"}
    assert operator.post("/api/core/role-assignments/", body, format="json").status_code == 403
    assert operator.get("/api/core/role-assignments/").status_code == 403
    response = api.post("/api/core/role-assignments/", body, format="json")
    assert response.status_code == 201
    assert AuditEvent.objects.filter(action="core.role.assign").count() == 2 + 1  # fixtures too
    bad = api.post(
        "/api/core/role-assignments/",
        {"user": bob.pk, "role": "viewer", "constraints": {"name": "x"}},
        format="json",
    )
    assert bad.status_code == 400 and "constraints" in bad.data
