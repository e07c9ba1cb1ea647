"""The audit log page: filters shared with the API, newest first, pages, CSV export, who sees it."""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth import get_user_model
from django.http import StreamingHttpResponse
from django.test import Client
from django.urls import reverse

from backupconsole import audit
from backupconsole.models import AuditEvent
from frontend.middleware import TIME_ZONE_COOKIE
from frontend.pages.audit.export import HEADER, safe_cell
from inventory.models import Connection
from tests.factories import ConnectionFactory, RepositoryFactory

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=ZoneInfo("UTC"))


def event(
    action: str, instance: Any, *, user: Any = None, at: datetime = T0, **kw: Any
) -> AuditEvent:
    """An audit event recorded as the services do, then moved to time ``at``."""
    recorded = audit.record(action, instance, acting_user=user, **kw)
    AuditEvent.objects.filter(pk=recorded.pk).update(time=at)
    recorded.refresh_from_db()
    return recorded


def shown_ids(response: Any) -> list[int]:
    return [int(pk) for pk in re.findall(r'<tr data-event="(\d+)"', response.content.decode())]


def csv_rows(response: Any) -> list[list[str]]:
    assert isinstance(response, StreamingHttpResponse)
    body = b"".join(response.streaming_content).decode()
    return list(csv.reader(io.StringIO(body)))


@pytest.fixture
def admin(logged_in: Any) -> Client:
    """An administrator's client; the event of granting the role is removed."""
    client = logged_in("alice", "administrator")
    AuditEvent.objects.filter(action="core.role.assign").delete()
    return client


@pytest.fixture
def history(new_user: Any) -> dict[str, AuditEvent]:
    """Four events by two users on a connection and a repository, an hour apart."""
    olga = new_user("olga")
    sam = new_user("sam")
    connection = ConnectionFactory(name="kvm-a")
    repository = RepositoryFactory(name="repo-a")
    return {
        "create": event("inventory.connection.create", connection, user=olga, at=T0),
        "update": event(
            "inventory.connection.update",
            connection,
            user=sam,
            at=T0 + timedelta(hours=1),
            before={"name": "kvm-0", "port": 22},
            after={"name": "kvm-a", "port": 22},
        ),
        "repo": event(
            "storage.repository.create", repository, user=olga, at=T0 + timedelta(hours=2)
        ),
        "system": event("jobs.run.start", None, at=T0 + timedelta(hours=3)),
    }


# --- the page -------------------------------------------------------------------------------------


def test_lists_events_newest_first_with_changes(admin: Client, history: dict[str, Any]) -> None:

    response = admin.get("/audit/")

    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="audit-table"' in html and 'id="audit-export"' in html
    order = ["system", "repo", "update", "create"]
    assert shown_ids(response) == [history[name].pk for name in order]
    assert "4 events" in html
    # Only the field that changed is listed, before and after.
    row = html.split(f'<tr data-event="{history["update"].pk}"')[1].split("<tr data-event=")[0]
    assert "1 field" in row and "<code>name</code>" in row and "kvm-0" in row
    assert "<code>port</code>" not in row
    assert "system" in html  # an event without a user
    # Suggestions for the filter fields come from the recorded events.
    assert '<option value="inventory.connection.update">' in html
    assert '<option value="olga">' in html


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("username=olga", ["repo", "create"]),
        ("action=inventory.connection", ["update", "create"]),
        ("action=storage.repository.create", ["repo"]),
        ("object_type=repository", ["repo"]),
        ("object_type=connection&username=sam", ["update"]),
        ("time_after=2026-03-01T13:00&time_before=2026-03-01T15:00", ["repo", "update"]),
        ("time_after=2026-03-01T14:30", ["system"]),
        ("username=nobody", []),
    ],
)
def test_filters(admin: Client, history: dict[str, Any], query: str, expected: list[str]) -> None:

    response = admin.get(f"/audit/?{query}")

    assert shown_ids(response) == [history[name].pk for name in expected]
    if not expected:
        assert "No events match these filters" in response.content.decode()


def test_filter_by_object_id(admin: Client, history: dict[str, Any]) -> None:
    connection = Connection.objects.get(name="kvm-a")

    response = admin.get(f"/audit/?object_type=connection&object_id={connection.pk}")

    assert shown_ids(response) == [history["update"].pk, history["create"].pk]


def test_time_range_is_read_in_the_users_time_zone(admin: Client, history: dict[str, Any]) -> None:
    admin.cookies[TIME_ZONE_COOKIE] = "Asia/Tokyo"  # UTC+9: 21:00 there is 12:00 UTC

    response = admin.get("/audit/?time_before=2026-03-01T21:30&username=olga")

    assert shown_ids(response) == [history["create"].pk]
    assert "2026-03-01 21:00:00" in response.content.decode()


def test_invalid_time_is_reported_next_to_the_field(admin: Client, history: dict[str, Any]) -> None:

    response = admin.get("/audit/?time_after=yesterday")

    html = response.content.decode()
    assert response.status_code == 200
    assert re.search(r'id="id_time_after"\s+class="[^"]*is-invalid', html)
    assert 'id="id_time_after_error">Enter a valid date/time.' in html
    assert len(shown_ids(response)) == len(history)  # the bad filter is ignored


def test_htmx_request_gets_only_the_results(admin: Client, history: dict[str, Any]) -> None:

    response = admin.get("/audit/?username=sam", headers={"HX-Request": "true"})

    html = response.content.decode()
    assert html.lstrip().startswith('<section id="audit-results"')
    assert "<html" not in html and 'id="audit-filters"' not in html
    assert shown_ids(response) == [history["update"].pk]
    assert 'href="/audit/export.csv?username=sam"' in html  # the export follows the filters
    assert "HX-Request" in response["Vary"]
    # A history restore (back button, cache miss) needs the whole page.
    full = admin.get(
        "/audit/?username=sam", headers={"HX-Request": "true", "HX-History-Restore-Request": "true"}
    )
    assert 'id="audit-filters"' in full.content.decode()


def test_objects_link_to_their_console_pages(
    admin: Client, new_user: Any, history: dict[str, Any]
) -> None:
    olga = get_user_model().objects.get(username="olga")
    event("core.user.create", olga, at=T0)
    connection_url = reverse("frontend:connection", args=[Connection.objects.get(name="kvm-a").pk])
    user_url = reverse("frontend:user", args=[olga.pk])

    as_admin = admin.get("/audit/").content.decode()
    viewer = Client()
    viewer.force_login(new_user("vera", "viewer"))
    as_viewer = viewer.get("/audit/").content.decode()

    assert f'<a href="{connection_url}">kvm-a</a>' in as_admin
    assert f'<a href="{user_url}">olga</a>' in as_admin
    assert f'<a href="{connection_url}">kvm-a</a>' in as_viewer
    assert user_url not in as_viewer  # the users page is for administrators


def test_filter_form_uses_htmx_with_push_url(admin: Client) -> None:
    html = admin.get("/audit/").content.decode()

    form = re.search(r'<form id="audit-filters"[^>]*>', html)
    assert form
    assert 'hx-get="/audit/"' in form.group(0)
    assert 'hx-target="#audit-results"' in form.group(0)
    assert 'hx-push-url="true"' in form.group(0)
    for name in ("username", "action", "object_type", "object_id", "time_after", "time_before"):
        assert re.search(rf'<label[^>]*for="id_{name}"', html), name


def test_pages_of_fifty(admin: Client) -> None:
    AuditEvent.objects.all().delete()
    for minute in range(55):
        event("jobs.run.start", None, at=T0 + timedelta(minutes=minute))
    newest_first = list(AuditEvent.objects.values_list("pk", flat=True))

    first = admin.get("/audit/")
    second = admin.get("/audit/?page=2")

    assert shown_ids(first) == newest_first[:50]
    assert shown_ids(second) == newest_first[50:]
    html = first.content.decode()
    assert "Page 1 of 2" in html and 'href="?page=2"' in html
    assert 'hx-push-url="true"' in html[html.index('aria-label="Audit log pages"') - 200 :]


def test_empty_log_tells_what_appears_here(admin: Client) -> None:
    AuditEvent.objects.all().delete()

    html = admin.get("/audit/").content.decode()

    assert 'id="audit-table"' not in html
    assert "Nothing recorded yet" in html


# --- CSV export -----------------------------------------------------------------------------------


def test_export_streams_the_filtered_events(admin: Client, history: dict[str, Any]) -> None:

    response = admin.get("/audit/export.csv?action=inventory.connection")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert re.fullmatch(
        r'attachment; filename="audit-log-\d{8}-\d{6}\.csv"', response["Content-Disposition"]
    )
    rows = csv_rows(response)
    assert rows[0] == list(HEADER)
    update, create = rows[1:]
    connection = Connection.objects.get(name="kvm-a")
    assert create[:7] == [
        "2026-03-01T12:00:00+00:00",
        "olga",
        "inventory.connection.create",
        "connection",
        str(connection.pk),
        "kvm-a",
        "",
    ]
    assert update[1] == "sam"
    assert update[7] == '{"name": "kvm-0", "port": 22}'
    assert update[8] == '{"name": "kvm-a", "port": 22}'


def test_export_times_carry_the_users_offset(admin: Client, history: dict[str, Any]) -> None:
    admin.cookies[TIME_ZONE_COOKIE] = "America/New_York"

    rows = csv_rows(admin.get("/audit/export.csv?username=olga"))

    times = [row[0] for row in rows[1:]]
    assert times == ["2026-03-01T09:00:00-05:00", "2026-03-01T07:00:00-05:00"]
    assert datetime.fromisoformat(times[1]) == history["create"].time


def test_export_neutralises_spreadsheet_formulas(admin: Client) -> None:
    AuditEvent.objects.all().delete()
    connection = ConnectionFactory(name='=HYPERLINK("http://evil","x")')
    event("inventory.connection.create", connection, at=T0)
    AuditEvent.objects.create(
        username="+cmd|' /C calc'!A0",
        action="-2+3",
        object_id="@SUM(A1)",
        object_repr="\tTAB",
    )

    rows = csv_rows(admin.get("/audit/export.csv"))

    crafted, created = rows[1], rows[2]
    assert created[4:6] == [str(connection.pk), '\'=HYPERLINK("http://evil","x")']
    assert crafted[1:3] == ["'+cmd|' /C calc'!A0", "'-2+3"]
    assert crafted[4:6] == ["'@SUM(A1)", "'\tTAB"]
    for row in rows[1:]:
        for cell in row:
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell


def test_safe_cell() -> None:
    assert safe_cell("=1+1") == "'=1+1"
    assert safe_cell("\rx") == "'\rx"
    assert safe_cell("a=b") == "a=b"
    assert safe_cell(None) == ""
    assert safe_cell(-5) == "'-5"
    assert safe_cell("") == ""


# --- who sees it ----------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["administrator", "operator", "viewer"])
def test_roles_that_view_see_the_log(logged_in: Any, history: dict[str, Any], role: str) -> None:
    client = logged_in("vera", role)

    assert client.get("/audit/").status_code == 200
    assert client.get("/audit/export.csv").status_code == 200


def test_without_a_role_the_log_is_forbidden(logged_in: Any, history: dict[str, Any]) -> None:
    client = logged_in("nora")

    assert client.get("/audit/").status_code == 403
    assert client.get("/audit/export.csv").status_code == 403
    assert "audit" not in [item["key"] for item in client.get("/").context["nav_items"]]


def test_a_role_on_other_objects_does_not_open_the_log(
    logged_in: Any, history: dict[str, Any]
) -> None:
    client = logged_in("cora", "viewer", object_types=["inventory.connection"])

    assert client.get("/audit/").status_code == 403
    assert client.get("/audit/export.csv").status_code == 403


def test_anonymous_is_sent_to_sign_in(client: Client) -> None:
    for url in ("/audit/", "/audit/export.csv"):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/login/?next=")


def test_a_scoped_role_sees_and_exports_only_its_events(
    logged_in: Any, history: dict[str, Any]
) -> None:
    client = logged_in(
        "ivan",
        "viewer",
        object_types=["backupconsole.auditevent"],
        constraints={"action__startswith": "inventory."},
    )

    page = client.get("/audit/")
    rows = csv_rows(client.get("/audit/export.csv"))

    assert shown_ids(page) == [history["update"].pk, history["create"].pk]
    assert [row[2] for row in rows[1:]] == [
        "inventory.connection.update",
        "inventory.connection.create",
    ]
    assert "storage.repository.create" not in page.content.decode()  # not even as a suggestion
