"""The dashboard: every figure comes from real rows, restricted to what the user may view."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client
from django.utils import timezone

from frontend.templatetags.console_tags import console_url
from inventory.filtersets import VirtualMachineFilterSet
from inventory.models import VirtualMachine
from jobs.choices import RunKind, RunResult, RunState, TaskKind, TaskState, Trigger
from jobs.models import JobRun, ProtectionPolicy, RunTask
from storage.choices import RestorePointState
from storage.models import Repository
from tests.factories import (
    PolicyFactory,
    RepositoryFactory,
    RestorePointFactory,
    VirtualMachineFactory,
    repository_with_usage,
)

pytestmark = pytest.mark.django_db


def card(html: str, card_id: str) -> str:
    """The HTML of one dashboard card (a <section> with that id)."""
    match = re.search(rf'<section[^>]*id="{card_id}".*?</section>', html, re.S)
    assert match, f"no card #{card_id}"
    return match.group(0)


def backdate(model: Any, pk: int, **fields: Any) -> None:
    """Sets auto_now_add timestamps, which create() ignores."""
    model.objects.filter(pk=pk).update(**fields)


# --- protected and unprotected VMs -------------------------------------------------------------


def test_protection_counts_present_vms_and_links_to_the_filtered_inventory(
    logged_in: Any,
) -> None:
    policy = PolicyFactory()
    protected = [VirtualMachineFactory(), VirtualMachineFactory()]
    policy.members.add(*protected)
    VirtualMachineFactory()  # unprotected
    gone = VirtualMachineFactory(present=False)  # no longer on the hypervisor: not counted
    policy.members.add(gone)
    client = logged_in("bob", "viewer")

    response = client.get("/")

    protection = response.context["protection"]
    assert (protection.protected, protection.unprotected, protection.total) == (2, 1, 3)
    assert protection.protected_percent == 67
    html = card(response.content.decode(), "dashboard-protection")
    assert re.search(r'data-testid="vms-protected">\s*<span[^>]*>2</span>', html)
    assert re.search(r'data-testid="vms-unprotected">\s*<span[^>]*>1</span>', html)
    # Each link carries the filter that gives the same count on the inventory page.
    for name, count in (("protected", 2), ("unprotected", 1)):
        link = protection.links[name]
        inventory = console_url("inventory")
        if not inventory:
            assert link == ""
            continue
        assert link.startswith(inventory + "?")
        query = {k: v[0] for k, v in parse_qs(urlsplit(link).query).items()}
        assert VirtualMachineFilterSet(query, queryset=VirtualMachine.objects.all()).qs.count() == (
            count
        )
        assert f'href="{link.replace("&", "&amp;")}"' in html


def test_protection_empty_state_says_to_add_a_connection(logged_in: Any) -> None:
    client = logged_in("root", "administrator")

    html = card(client.get("/").content.decode(), "dashboard-protection")

    assert "No virtual machines yet." in html
    assert "Add a connection" in html
    new_connection = console_url("connection-new")
    if new_connection:
        assert f'href="{new_connection}"' in html


# --- runs of the last 24 hours -----------------------------------------------------------------


def _finished(result: str, *, age: timedelta = timedelta(hours=1), **fields: Any) -> JobRun:
    run = JobRun.objects.create(
        trigger=Trigger.SCHEDULE, state=RunState.FINISHED, result=result, **fields
    )
    backdate(JobRun, run.pk, created_at=timezone.now() - age)
    return run


def test_runs_of_the_last_24_hours_by_result(logged_in: Any) -> None:
    _finished(RunResult.SUCCEEDED)
    _finished(RunResult.SUCCEEDED, age=timedelta(hours=23))
    _finished(RunResult.WARNING)
    _finished(RunResult.FAILED)
    _finished(RunResult.CANCELLED)
    _finished(RunResult.FAILED, age=timedelta(hours=25))  # before the window
    JobRun.objects.create(trigger=Trigger.MANUAL, state=RunState.WORKING)  # not ended
    client = logged_in("bob", "viewer")

    response = client.get("/")

    recent = response.context["recent_runs"]
    assert recent.counts == {"succeeded": 2, "warning": 1, "failed": 1}
    html = card(response.content.decode(), "dashboard-runs-24h")
    for testid, count in (("runs-succeeded", 2), ("runs-warning", 1), ("runs-failed", 1)):
        assert re.search(rf'data-testid="{testid}">\s*<span[^>]*>{count}</span>', html)
    runs_page = console_url("runs")
    if runs_page:
        link = recent.links["failed"]
        query = parse_qs(urlsplit(link).query)
        assert query["result"] == ["failed"]
        assert datetime.fromisoformat(query["created_after"][0]) == recent.since


def test_runs_card_without_policies_says_to_create_one(logged_in: Any) -> None:
    html = card(logged_in("bob", "viewer").get("/").content.decode(), "dashboard-runs-24h")

    assert "No runs yet." in html
    assert "Create a policy" in html


# --- running jobs --------------------------------------------------------------------------------


def test_running_card_lists_active_runs_only(logged_in: Any) -> None:
    policy = PolicyFactory(name="nightly-gold")
    active = JobRun.objects.create(policy=policy, trigger=Trigger.MANUAL, state=RunState.WORKING)
    done = _finished(RunResult.SUCCEEDED, policy=policy)
    client = logged_in("bob", "viewer")

    html = card(client.get("/").content.decode(), "dashboard-running")

    assert f'id="running-run-{active.pk}"' in html
    assert f'id="running-run-{done.pk}"' not in html


def test_running_card_empty_state(logged_in: Any) -> None:
    html = card(logged_in("bob", "viewer").get("/").content.decode(), "dashboard-running")

    assert "Nothing is running." in html


# --- repositories --------------------------------------------------------------------------------


def test_repository_usage_and_dedup_ratio(logged_in: Any) -> None:
    repository = repository_with_usage("repo-primary")
    Repository.objects.filter(pk=repository.pk).update(
        used_bytes=512 * 2**30, capacity_bytes=2**40, usage_updated_at=timezone.now()
    )
    client = logged_in("bob", "viewer")

    response = client.get("/")

    (usage,) = response.context["repositories"].rows
    assert (usage.logical_bytes, usage.unique_bytes, usage.stored_bytes) == (
        20 * 2**30,
        4 * 2**30,
        2 * 2**30,
    )
    assert usage.dedup_ratio == 5.0
    assert usage.compression_ratio == 2.0
    html = card(response.content.decode(), "dashboard-repositories")
    assert "repo-primary" in html
    assert 'data-testid="dedup-ratio">5.0\u00d7<' in html
    assert "2.0\xa0GiB" in html and "20.0\xa0GiB" in html
    assert 'aria-valuenow="50"' in html
    assert "512.0\xa0GiB of 1.0\xa0TiB" in html


def test_repositories_card_empty_state_links_to_the_new_repository_form(logged_in: Any) -> None:
    admin = card(
        logged_in("root", "administrator").get("/").content.decode(), "dashboard-repositories"
    )

    assert "No repositories yet." in admin
    assert f'href="{console_url("repository-new")}"' in admin
    assert "Create a repository" in admin


def test_viewer_is_not_offered_to_create_a_repository(logged_in: Any) -> None:
    html = card(logged_in("bob", "viewer").get("/").content.decode(), "dashboard-repositories")

    assert "No repositories yet." in html
    assert console_url("repository-new") not in html


# --- throughput ----------------------------------------------------------------------------------


def _disk_task(
    run: JobRun, finished_at: datetime, size: int, state: str = TaskState.SUCCEEDED
) -> RunTask:
    return RunTask.objects.create(
        run=run,
        kind=TaskKind.DISK,
        name="vda",
        state=state,
        bytes_done=size,
        bytes_total=size,
        finished_at=finished_at,
    )


def test_throughput_sums_backed_up_disk_bytes_per_day(logged_in: Any) -> None:
    now = timezone.now()
    backup = _finished(RunResult.SUCCEEDED)
    restore = _finished(RunResult.SUCCEEDED, kind=RunKind.RESTORE)
    _disk_task(backup, now - timedelta(minutes=5), 3 * 2**30)
    _disk_task(backup, now - timedelta(minutes=6), 2**30)
    _disk_task(backup, now - timedelta(days=3), 5 * 2**20)
    _disk_task(backup, now - timedelta(days=3), 7 * 2**20, TaskState.FAILED)  # not backed up
    _disk_task(restore, now - timedelta(minutes=5), 9 * 2**30)  # a restore: not a backup
    _disk_task(backup, now - timedelta(days=20), 2**40)  # before the chart
    client = logged_in("bob", "viewer")

    response = client.get("/")

    days = response.context["throughput"].days
    assert len(days) == 14
    by_day = {day["day"]: day["bytes"] for day in days}
    today = timezone.localdate(now)
    assert days[-1]["day"] == today.isoformat()
    assert by_day[today.isoformat()] == 4 * 2**30
    assert by_day[(today - timedelta(days=3)).isoformat()] == 5 * 2**20
    assert sum(by_day.values()) == 4 * 2**30 + 5 * 2**20
    html = card(response.content.decode(), "dashboard-throughput")
    data = re.search(r'<script id="throughput-data" type="application/json">(.*?)</script>', html)
    assert data and json.loads(data.group(1)) == days
    assert '<canvas id="throughput-chart" role="img"' in html
    # The table holds the same figures for screen readers and browsers without JavaScript.
    assert f'<time datetime="{today.isoformat()}">' in html
    assert "4.0\xa0GiB" in html
    page = response.content.decode()
    assert "/static/vendor/chartjs/chart.umd.min.js" in page
    assert "/static/frontend/dashboard.js" in page


def test_throughput_days_follow_the_users_time_zone(logged_in: Any, client: Client) -> None:
    # 23:30 UTC yesterday is already today, 08:30, in Tokyo.
    today_utc = timezone.now().astimezone(UTC).date()
    late = datetime.combine(today_utc - timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    late += timedelta(hours=23, minutes=30)
    if late > timezone.now():  # pragma: no cover - only between 23:30 and 24:00 UTC
        late -= timedelta(days=1)
    _disk_task(_finished(RunResult.SUCCEEDED), late, 2**20)
    logged_in("bob", "viewer")

    utc_days = {d["day"]: d["bytes"] for d in client.get("/").context["throughput"].days}
    client.cookies["console_tz"] = "Asia/Tokyo"
    tokyo_days = {d["day"]: d["bytes"] for d in client.get("/").context["throughput"].days}

    assert utc_days[late.date().isoformat()] == 2**20
    assert tokyo_days[(late.date() + timedelta(days=1)).isoformat()] == 2**20


def test_throughput_empty_state(logged_in: Any) -> None:
    response = logged_in("bob", "viewer").get("/")

    html = card(response.content.decode(), "dashboard-throughput")
    assert "Nothing backed up in the last 14 days." in html
    assert "throughput-chart" not in html
    assert "chart.umd.min.js" not in response.content.decode()


# --- RPO breach ----------------------------------------------------------------------------------


def test_rpo_breach_lists_vms_whose_newest_good_point_is_too_old(logged_in: Any) -> None:
    now = timezone.now()
    hours = lambda n: now - timedelta(hours=n)  # noqa: E731
    daily = PolicyFactory(name="daily", rpo_hours=24)
    hourly = PolicyFactory(name="six-hourly", rpo_hours=6)
    idle = PolicyFactory(name="disabled", rpo_hours=1, enabled=False)
    backdate(ProtectionPolicy, daily.pk, created_at=hours(72))
    backdate(ProtectionPolicy, hourly.pk, created_at=hours(72))
    late, fresh, corrupt_newest, never, tight, unwatched = (
        VirtualMachineFactory(name=name)
        for name in ("late", "fresh", "corrupt-newest", "never", "tight", "unwatched")
    )
    daily.members.add(late, fresh, corrupt_newest, never, tight)
    hourly.members.add(tight)
    idle.members.add(unwatched)
    RestorePointFactory(vm=late, created_at=hours(30))
    RestorePointFactory(vm=fresh, created_at=hours(2), state=RestorePointState.VERIFIED)
    RestorePointFactory(vm=corrupt_newest, created_at=hours(2), state=RestorePointState.CORRUPT)
    RestorePointFactory(vm=corrupt_newest, created_at=hours(40))
    RestorePointFactory(vm=tight, created_at=hours(10))  # fine for "daily", late for "six-hourly"
    RestorePointFactory(vm=unwatched, created_at=hours(100))
    client = logged_in("bob", "viewer")

    response = client.get("/")

    rpo = response.context["rpo"]
    assert rpo.watched == 5
    assert rpo.total == 4
    # Longest overdue first, by when the target was missed: "never" at its policy's creation
    # + 24 h (48 h ago), then 40 + 24 - 24 = 16 h ago, 30 - 24 = 6 h ago, 10 - 6 = 4 h ago.
    assert [b.vm.name for b in rpo.breaches] == ["never", "corrupt-newest", "late", "tight"]
    by_name = {b.vm.name: b for b in rpo.breaches}
    assert by_name["never"].last_point is None
    assert by_name["tight"].rpo_hours == 6
    assert abs(by_name["corrupt-newest"].last_point - hours(40)) < timedelta(seconds=1)
    html = card(response.content.decode(), "dashboard-rpo")
    assert f'data-testid="rpo-breach-{never.pk}"' in html
    assert "never" in html and "6 h" in html
    assert "fresh" not in html and "unwatched" not in html


def test_rpo_new_policy_is_not_in_breach_yet_and_all_good_is_said(logged_in: Any) -> None:
    policy = PolicyFactory(rpo_hours=24)
    policy.members.add(VirtualMachineFactory(name="brand-new"))
    client = logged_in("bob", "viewer")

    response = client.get("/")

    assert response.context["rpo"].total == 0
    html = card(response.content.decode(), "dashboard-rpo")
    assert "All 1 protected VM have a restore point within their policy" in html


def test_rpo_empty_state_says_to_create_a_policy(logged_in: Any) -> None:
    html = card(logged_in("bob", "viewer").get("/").content.decode(), "dashboard-rpo")

    assert "No VM is protected by an enabled policy yet." in html


# --- time zone -----------------------------------------------------------------------------------


def _old_breach() -> None:
    policy = PolicyFactory(rpo_hours=1)
    vm = VirtualMachineFactory(name="old-vm")
    policy.members.add(vm)
    RestorePointFactory(vm=vm, created_at=datetime(2026, 1, 1, 12, 0, tzinfo=UTC))


def test_times_render_in_the_zone_the_cookie_names(logged_in: Any, client: Client) -> None:
    _old_breach()
    logged_in("bob", "viewer")
    client.cookies["console_tz"] = "Asia/Tokyo"

    html = client.get("/").content.decode()

    assert "2026-01-01 21:00" in card(html, "dashboard-rpo")
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d JST", html)


@pytest.mark.parametrize("garbage", ["Mars/Olympus_Mons", "../../etc/passwd", "Europe", ""])
def test_a_garbage_time_zone_cookie_falls_back_to_the_server_zone(
    logged_in: Any, client: Client, garbage: str
) -> None:
    _old_breach()
    logged_in("bob", "viewer")
    client.cookies["console_tz"] = garbage

    response = client.get("/")

    assert response.status_code == 200
    assert "2026-01-01 12:00" in card(response.content.decode(), "dashboard-rpo")


# --- layout --------------------------------------------------------------------------------------


def test_layout_has_theme_toggle_skip_link_and_early_theme_script(logged_in: Any) -> None:
    html = logged_in("bob", "viewer").get("/").content.decode()

    assert re.search(r'<button type="button"[^>]*id="theme-toggle"[^>]*aria-pressed="false"', html)
    assert '<html lang="en" data-bs-theme="light">' in html
    head = html[: html.index("</head>")]
    # The theme script runs before the stylesheets and is not deferred: no flash of light theme.
    script = head.index('<script src="/static/frontend/console.js"></script>')
    assert script < head.index("bootstrap.min.css")
    skip = re.search(r'<a class="visually-hidden-focusable skip-link" href="#content">', html)
    assert skip and skip.start() < html.index("<header")
    assert '<main class="console-main" id="content" tabindex="-1">' in html


def test_theme_and_time_zone_script_is_served() -> None:
    from django.contrib.staticfiles import finders

    path = finders.find("frontend/console.js")
    assert path
    with open(path) as handle:
        source = handle.read()
    for needed in ("data-bs-theme", "localStorage", "prefers-color-scheme", "theme-toggle"):
        assert needed in source
    assert "Intl.DateTimeFormat().resolvedOptions().timeZone" in source
    assert "console_tz" in source


# --- who sees what -------------------------------------------------------------------------------


def test_no_role_sees_no_cards(logged_in: Any) -> None:
    PolicyFactory()
    html = logged_in("carol").get("/").content.decode()

    assert "no role yet" in html
    for card_id in (
        "dashboard-protection",
        "dashboard-runs-24h",
        "dashboard-running",
        "dashboard-repositories",
        "dashboard-throughput",
        "dashboard-rpo",
    ):
        assert f'id="{card_id}"' not in html


def test_scoped_viewer_counts_only_their_vms(logged_in: Any) -> None:
    policy = PolicyFactory(rpo_hours=1)
    backdate(ProtectionPolicy, policy.pk, created_at=timezone.now() - timedelta(days=2))
    mine = VirtualMachineFactory(name="web-mine")
    theirs = VirtualMachineFactory(name="db-theirs")
    policy.members.add(mine, theirs)
    client = logged_in(
        "dave",
        "viewer",
        object_types=["inventory.virtualmachine"],
        constraints={"name__startswith": "web-"},
    )

    response = client.get("/")

    assert response.context["protection"].protected == 1
    assert [b.vm.name for b in response.context["rpo"].breaches] == ["web-mine"]
    assert response.context["recent_runs"] is None
    html = response.content.decode()
    assert "db-theirs" not in html
    assert 'id="dashboard-runs-24h"' not in html
    assert 'id="dashboard-repositories"' not in html


# --- cost ----------------------------------------------------------------------------------------


def _estate(size: int) -> None:
    policy = PolicyFactory(rpo_hours=1)
    backdate(ProtectionPolicy, policy.pk, created_at=timezone.now() - timedelta(days=2))
    for _ in range(size):
        vm = VirtualMachineFactory()
        policy.members.add(vm)
        repository = RepositoryFactory()
        RestorePointFactory(
            vm=vm, repository=repository, created_at=timezone.now() - timedelta(hours=5)
        )
        run = _finished(RunResult.SUCCEEDED, policy=policy)
        _disk_task(run, timezone.now(), 2**20)
        JobRun.objects.create(policy=policy, trigger=Trigger.MANUAL, state=RunState.WORKING)


def test_dashboard_queries_do_not_grow_with_the_rows(logged_in: Any) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client = logged_in("bob", "viewer")
    # Sizes below every card's row limit: a card showing "N of M" counts M once more.
    _estate(1)
    with CaptureQueriesContext(connection) as small:
        assert client.get("/").status_code == 200
    _estate(4)
    with CaptureQueriesContext(connection) as large:
        response = client.get("/")

    assert len(response.context["rpo"].breaches) == 5
    assert len(large.captured_queries) == len(small.captured_queries)
