"""Runs pages: the list (the API's FilterSet, sort, pages), a run's live page with its numbers
from real rows, the fragments pages poll, cancel, and who may see or do what."""

from __future__ import annotations

import re
from datetime import timedelta
from html.parser import HTMLParser
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.template.loader import render_to_string
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from backupconsole.models import AuditEvent
from backupconsole.services import assign_role
from frontend.pages.runs.fragments import running_runs
from jobs import services
from jobs.choices import (
    CHANGED_ONLY_NOTE,
    LogLevel,
    Phase,
    RunKind,
    RunResult,
    RunState,
    TaskKind,
    TaskState,
    Trigger,
)
from jobs.models import JobRun, RunLog, RunTask
from tests.factories import PolicyFactory, VirtualDiskFactory, VirtualMachineFactory

pytestmark = pytest.mark.django_db

GiB = 2**30
MiB = 2**20
VOID = {"area", "br", "col", "hr", "img", "input", "link", "meta", "source", "wbr"}


class _Element(HTMLParser):
    """Text and attributes of the element with a given id (and of all its descendants)."""

    def __init__(self, element_id: str) -> None:
        super().__init__()
        self.element_id, self.depth, self.text, self.attrs = element_id, 0, [], None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.depth:
            self.depth += tag not in VOID
        elif dict(attrs).get("id") == self.element_id and self.attrs is None:
            self.attrs, self.depth = dict(attrs), 1

    def handle_endtag(self, tag: str) -> None:
        if self.depth:
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if self.depth:
            self.text.append(data)


def element(html: str, element_id: str) -> tuple[str, dict[str, str | None]] | None:
    parser = _Element(element_id)
    parser.feed(html)
    if parser.attrs is None:
        return None
    return " ".join("".join(parser.text).split()), parser.attrs


def text(html: str, element_id: str) -> str:
    found = element(html, element_id)
    assert found is not None, f"no #{element_id}"
    return found[0].replace("\u00a0", " ")


@pytest.fixture
def world(db: Any) -> dict[str, Any]:
    """A backup in progress (one VM transferring, one waiting for the repository), a finished
    backup of another policy and a failed verify job, with their tasks and logs."""
    now = timezone.now()
    gold = PolicyFactory(name="nightly-gold")
    other = PolicyFactory(name="other")
    web = VirtualMachineFactory(name="web-1")
    db_vm = VirtualMachineFactory(name="db-1")
    vda = VirtualDiskFactory(vm=web, device_key="vda", capacity_bytes=4 * GiB)
    vdb = VirtualDiskFactory(vm=web, device_key="vdb", capacity_bytes=2 * GiB)
    sdc = VirtualDiskFactory(vm=web, device_key="sdc", capacity_bytes=8 * GiB)
    data = VirtualDiskFactory(vm=db_vm, device_key="vda", capacity_bytes=10 * GiB)

    working = JobRun.objects.create(
        policy=gold,
        trigger=Trigger.SCHEDULE,
        state=RunState.WORKING,
        started_at=now - timedelta(minutes=3),
    )
    web_task = RunTask.objects.create(
        run=working, kind=TaskKind.VM, name="web-1", vm=web, state=TaskState.RUNNING
    )
    RunTask.objects.create(
        run=working,
        parent=web_task,
        kind=TaskKind.PHASE,
        phase=Phase.SNAPSHOT,
        name="Snapshot",
        state=TaskState.SUCCEEDED,
        position=100,
        message="Application-consistent (guest agent).",
    )

    def disk(parent: RunTask, vdisk: Any, **fields: Any) -> RunTask:
        return RunTask.objects.create(
            run=working, parent=parent, kind=TaskKind.DISK, name=vdisk.device_key, disk=vdisk,
            vm=vdisk.vm, **fields,
        )  # fmt: skip

    tasks = {
        "vda": disk(
            web_task,
            vda,
            state=TaskState.RUNNING,
            bytes_done=1 * GiB,
            bytes_total=4 * GiB,
            rate_bps=100 * MiB,
            busy_source=0.9,
            busy_proxy=0.3,
            busy_repository=0.2,
            bottleneck="source",
            message="The dirty bitmap was lost when the VM stopped.",
            position=0,
        ),
        "vdb": disk(
            web_task,
            vdb,
            state=TaskState.SUCCEEDED,
            bytes_done=2 * GiB,
            bytes_total=2 * GiB,
            busy_source=0.5,
            busy_proxy=0.2,
            busy_repository=0.6,
            bottleneck="repository",
            message=CHANGED_ONLY_NOTE,
            position=1,
        ),
        "sdc": disk(
            web_task,
            sdc,
            state=TaskState.SKIPPED,
            message="Raw device mapping: not backed up.",
            position=2,
        ),
    }
    db_task = RunTask.objects.create(
        run=working,
        kind=TaskKind.VM,
        name="db-1",
        vm=db_vm,
        state=TaskState.PENDING,
        position=1,
        message="Waiting for the repository (4 backups are writing to it).",
    )
    tasks["db"] = disk(db_task, data, state=TaskState.PENDING, bytes_total=10 * GiB)
    RunLog.objects.create(run=working, message="2 virtual machine(s) selected.")
    RunLog.objects.create(
        run=working,
        task=web_task,
        level=LogLevel.WARNING,
        message="web-1 vda: read in full: The dirty bitmap was lost when the VM stopped.",
    )

    finished = JobRun.objects.create(
        policy=other,
        trigger=Trigger.MANUAL,
        state=RunState.FINISHED,
        result=RunResult.SUCCEEDED,
        reason="1 virtual machine(s) backed up.",
        started_at=now - timedelta(hours=2),
        finished_at=now - timedelta(hours=2) + timedelta(hours=1, minutes=2, seconds=5),
    )
    RunTask.objects.create(run=finished, kind=TaskKind.VM, name="web-1", vm=web,
                           state=TaskState.SUCCEEDED)  # fmt: skip
    RunTask.objects.create(
        run=finished, kind=TaskKind.DISK, name="vda", vm=web, disk=vda,
        state=TaskState.SUCCEEDED, bytes_done=3 * GiB, bytes_total=3 * GiB,
    )  # fmt: skip
    verify = JobRun.objects.create(
        kind=RunKind.VERIFY,
        repository=gold.repository,
        trigger=Trigger.MANUAL,
        state=RunState.FINISHED,
        result=RunResult.FAILED,
        reason="Fast verify: 1 of 4 corrupt.",
        bytes_done=5 * GiB,
        bytes_total=8 * GiB,
    )
    # Created at known times, so the time-range filters have something to tell apart.
    JobRun.objects.filter(pk=finished.pk).update(created_at=now - timedelta(days=3))
    JobRun.objects.filter(pk=verify.pk).update(created_at=now - timedelta(hours=5))
    return {
        "gold": gold,
        "other": other,
        "working": working,
        "finished": finished,
        "verify": verify,
        "tasks": tasks,
        "web_task": web_task,
        "db_task": db_task,
    }


def rows(html: str) -> list[int]:
    return [int(pk) for pk in re.findall(r'<tr id="run-row-(\d+)"', html)]


# --- the list ------------------------------------------------------------------------------------


def test_list_shows_each_run_with_its_numbers(logged_in: Any, world: dict[str, Any]) -> None:
    client = logged_in("vera", "viewer")

    response = client.get("/runs/")

    assert response.status_code == 200
    html = response.content.decode()
    working, finished, verify = world["working"], world["finished"], world["verify"]
    assert rows(html) == [working.pk, verify.pk, finished.pk]  # newest first
    # The running backup: its disks' bytes (skipped sdc does not count): 3 of 16 GiB = 18 %.
    row = text(html, f"run-row-{working.pk}")
    assert "Backup" in row and "nightly-gold" in row and "Working" in row
    assert "3.0 GiB / 16.0 GiB" in row and "18 %" in row
    assert "100.0 MiB/s" in row and "2 min 13 s left" in row  # 13 GiB at 100 MiB/s
    assert "schedule" in row  # nobody requested it: the schedule did
    # The finished backup: its duration, no progress bar.
    row = text(html, f"run-row-{finished.pk}")
    assert "Succeeded" in row and "1 h 02 min" in row and "3.0 GiB / 3.0 GiB" in row
    assert "%" not in row
    # A repository job shows its repository and its own byte counters.
    row = text(html, f"run-row-{verify.pk}")
    assert "Verify" in row and world["gold"].repository.name in row and "Failed" in row
    assert "5.0 GiB / 8.0 GiB" in row
    # Only the running row polls (when the socket is down) and the socket asks for it alone.
    assert f'ws-connect="/ws/console/events/?runs={working.pk}"' in html
    assert html.count("every 2s [consoleLive.down(this)]") == 1


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("state=working", ["working"]),
        ("state=finished", ["verify", "finished"]),
        ("result=failed", ["verify"]),
        ("result=succeeded&result=failed", ["verify", "finished"]),
        ("kind=verify", ["verify"]),
        ("kind=backup", ["working", "finished"]),
        ("period=24h", ["working", "verify"]),
        ("period=7d&kind=backup", ["working", "finished"]),
    ],
)
def test_list_filters(
    logged_in: Any, world: dict[str, Any], query: str, expected: list[str]
) -> None:
    client = logged_in("vera", "viewer")

    html = client.get(f"/runs/?{query}").content.decode()

    assert rows(html) == [world[name].pk for name in expected]


def test_list_filters_by_policy_and_time_range(logged_in: Any, world: dict[str, Any]) -> None:
    client = logged_in("vera", "viewer")
    other = world["other"]

    html = client.get(f"/runs/?policy={other.pk}").content.decode()
    assert rows(html) == [world["finished"].pk]
    assert f'<option value="{other.pk}" selected>other</option>' in html

    # A datetime-local value (the form's) in the browser's zone, as the console sends it.
    four_days_ago = timezone.localtime() - timedelta(days=4)
    day_ago = timezone.localtime() - timedelta(days=1)
    html = client.get(
        "/runs/",
        {
            "created_after": four_days_ago.strftime("%Y-%m-%dT%H:%M"),
            "created_before": day_ago.strftime("%Y-%m-%dT%H:%M"),
        },
    ).content.decode()
    assert rows(html) == [world["finished"].pk]


def test_invalid_filter_shows_the_error_next_to_its_field(
    logged_in: Any, world: dict[str, Any]
) -> None:
    client = logged_in("vera", "viewer")

    html = client.get("/runs/?state=sleeping&created_after=yesterday").content.decode()

    assert 'id="filter-state" name="state" aria-describedby="filter-state-error"' in html
    assert "Select a valid choice. sleeping is not one of the available choices." in text(
        html, "filter-state-error"
    )
    assert "Enter a valid date/time." in text(html, "filter-created-after-error")


def test_htmx_request_gets_the_list_fragment_only(logged_in: Any, world: dict[str, Any]) -> None:
    client = logged_in("vera", "viewer")

    response = client.get("/runs/?kind=verify", headers={"HX-Request": "true"})

    html = response.content.decode()
    assert html.lstrip().startswith('<div id="runs-list"')
    assert "<html" not in html and rows(html) == [world["verify"].pk]
    assert "HX-Request" in response["Vary"]
    # A history restore after a cache miss needs the whole page.
    response = client.get(
        "/runs/", headers={"HX-Request": "true", "HX-History-Restore-Request": "true"}
    )
    assert "<html" in response.content.decode()


def test_list_sorts_and_pages(logged_in: Any, world: dict[str, Any]) -> None:
    client = logged_in("vera", "viewer")
    policy = world["gold"]
    now = timezone.now()
    extra = [
        JobRun.objects.create(
            policy=policy,
            trigger=Trigger.SCHEDULE,
            state=RunState.FINISHED,
            result=RunResult.SUCCEEDED,
            started_at=now - timedelta(days=10, minutes=n),
            finished_at=now - timedelta(days=10),
        )
        for n in range(30)
    ]

    first = client.get("/runs/").content.decode()
    assert len(rows(first)) == 25
    assert "1\u201325 of 33 runs" in text(first, "runs-count")
    second = client.get("/runs/?page=2").content.decode()
    assert len(rows(second)) == 8
    assert set(rows(first)).isdisjoint(rows(second))

    # Longest first: the extra run that took 29 minutes beats the other extra runs, and the
    # finished backup (1 h 02 min) beats them all; runs not started yet sort last.
    longest = rows(client.get("/runs/?ordering=-duration").content.decode())
    assert longest[:2] == [world["finished"].pk, extra[29].pk]
    last_page = rows(client.get("/runs/?ordering=-duration&page=2").content.decode())
    assert last_page[-1] == world["verify"].pk
    oldest_start = rows(client.get("/runs/?ordering=started_at").content.decode())
    assert oldest_start[0] == extra[29].pk
    # The header link flips the direction and keeps the filters.
    html = client.get("/runs/?kind=backup&ordering=-duration").content.decode()
    assert 'aria-sort="descending"' in html
    assert 'href="?kind=backup&amp;ordering=duration"' in html
    # An unknown sort key falls back to newest first rather than failing.
    assert rows(client.get("/runs/?ordering=password").content.decode())[0] == extra[-1].pk


def test_list_empty_states(logged_in: Any) -> None:
    client = logged_in("vera", "viewer")

    html = client.get("/runs/").content.decode()
    assert "No runs yet." in text(html, "runs-empty")
    html = client.get("/runs/?kind=gc").content.decode()
    assert "No runs match these filters." in text(html, "runs-empty")


def test_list_needs_a_role_and_shows_only_visible_runs(
    client: Client, logged_in: Any, world: dict[str, Any]
) -> None:
    assert logged_in("nobody").get("/runs/").status_code == 403
    client.logout()

    scoped = logged_in(
        "sam", "viewer", object_types=["jobs.jobrun"], constraints={"policy__name": "other"}
    )
    html = scoped.get("/runs/").content.decode()
    assert rows(html) == [world["finished"].pk]
    assert "nightly-gold" not in html


def test_list_query_count_does_not_grow_with_rows(logged_in: Any, world: dict[str, Any]) -> None:
    client = logged_in("vera", "viewer")
    with CaptureQueriesContext(connection) as few:
        client.get("/runs/")
    for _ in range(10):
        JobRun.objects.create(policy=world["gold"], trigger=Trigger.MANUAL)
    with CaptureQueriesContext(connection) as many:
        client.get("/runs/")
    assert len(many) == len(few)


# --- the run page -------------------------------------------------------------------------------


def test_run_page_shows_progress_bottleneck_tree_and_log(
    logged_in: Any, world: dict[str, Any]
) -> None:
    client = logged_in("vera", "viewer")
    working = world["working"]

    response = client.get(f"/runs/{working.pk}/")

    assert response.status_code == 200
    html = response.content.decode()
    assert text(html, "run-state") == "Working"
    assert text(html, "run-percent") == "18 %"  # 3 of 16 GiB
    progress = element(html, "run-progress")
    assert progress and progress[1]["aria-valuenow"] == "18"
    assert text(html, "run-bytes") == "3.0 GiB of 16.0 GiB"
    assert text(html, "run-rate") == "100.0 MiB/s"
    assert text(html, "run-eta") == "about 2 min 13 s"
    # Busy shares weighted by bytes read (vda 1 GiB, vdb 2 GiB): source (0.9 + 2 * 0.5) / 3.
    bottleneck = text(html, "run-bottleneck")
    assert bottleneck.startswith("Source read")
    assert "Source read 63 %" in bottleneck
    assert "Proxy processing 23 %" in bottleneck
    assert "Repository write 47 %" in bottleneck
    assert text(html, "run-requested-by") == "Schedule"
    assert text(html, "run-vms") == "web-1, db-1"

    # The tree: web-1 transferring after its snapshot; why vda is read in full; sdc excluded.
    web = text(html, f"run-task-{world['web_task'].pk}")
    assert "web-1" in web and "Transfer" in web and "50 %" in web  # 3 of 6 GiB
    vda = text(html, f"run-task-{world['tasks']['vda'].pk}")
    assert "Read in full The dirty bitmap was lost when the VM stopped." in vda
    assert "25 %" in vda and "1.0 GiB / 4.0 GiB" in vda and "30 s left" in vda  # 3 GiB to go
    vdb = text(html, f"run-task-{world['tasks']['vdb'].pk}")
    assert "Changed blocks only" in vdb and "100 %" in vdb
    sdc = text(html, f"run-task-{world['tasks']['sdc'].pk}")
    assert "Excluded: Raw device mapping: not backed up." in sdc
    phases = re.findall(r'data-phase="(\w+)" data-phase-state="(\w+)"', html)
    assert phases[:4] == [
        ("snapshot", "done"),
        ("transfer", "running"),
        ("commit", "pending"),
        ("cleanup", "pending"),
    ]
    # db-1 waits for the repository, and says so.
    db = text(html, f"run-task-{world['db_task'].pk}")
    assert "Waiting for the repository (4 backups are writing to it)." in db
    assert "db-1: Waiting for the repository" in text(html, "run-waiting")

    assert "web-1 vda: read in full" in text(html, "run-warnings")
    log = text(html, "run-log")
    assert "2 virtual machine(s) selected." in log and "web-1 vda: read in full" in log
    # It updates itself: a socket on the console path, a polling fallback on the fragment.
    assert f'ws-connect="/ws/console/runs/{working.pk}/"' in html
    assert f'hx-get="/runs/{working.pk}/live/"' in html


def test_finished_run_page_is_complete_and_does_not_poll(
    logged_in: Any, world: dict[str, Any]
) -> None:
    client = logged_in("vera", "viewer")
    finished = world["finished"]

    html = client.get(f"/runs/{finished.pk}/").content.decode()

    assert text(html, "run-percent") == "100 %"
    assert text(html, "run-state") == "Finished" and text(html, "run-result") == "Succeeded"
    assert text(html, "run-reason") == "1 virtual machine(s) backed up."
    assert text(html, "run-duration") == "1 h 02 min"
    live = element(html, "run-live")
    assert live and "data-live-final" in live[1] and "hx-trigger" not in live[1]
    assert "ws-connect" not in html and "run-cancel" not in html


def test_repository_job_page_uses_its_own_counters(logged_in: Any, world: dict[str, Any]) -> None:
    client = logged_in("vera", "viewer")

    html = client.get(f"/runs/{world['verify'].pk}/").content.decode()

    assert text(html, "run-percent") == "62 %"  # 5 of 8 GiB, rounded down
    assert text(html, "run-result") == "Failed"
    assert "has no per-VM tasks" in text(html, "run-tree")


def test_page_embeds_exactly_the_fragment_it_polls(logged_in: Any, world: dict[str, Any]) -> None:
    client = logged_in("vera", "viewer")
    pk = world["working"].pk

    page = client.get(f"/runs/{pk}/").content.decode()
    fragment = client.get(f"/runs/{pk}/live/").content.decode()

    assert fragment.startswith('<div id="run-live"')
    assert fragment in page
    row = client.get(f"/runs/{pk}/row/").content.decode()
    assert row.startswith(f'<tr id="run-row-{pk}"')
    assert row in client.get("/runs/").content.decode()


def test_times_are_shown_in_the_browser_zone(logged_in: Any, world: dict[str, Any]) -> None:
    client = logged_in("vera", "viewer")
    finished = world["finished"]
    client.cookies["console_tz"] = "Asia/Kolkata"  # UTC+05:30, no daylight saving

    html = client.get(f"/runs/{finished.pk}/").content.decode()

    started = finished.started_at + timedelta(hours=5, minutes=30)
    assert text(html, "run-started") == started.strftime("%Y-%m-%d %H:%M:%S")


# --- permissions and cancel ----------------------------------------------------------------------


def test_viewer_sees_the_run_but_no_cancel_and_cannot_force_it(
    logged_in: Any, world: dict[str, Any]
) -> None:
    client = logged_in("vera", "viewer")
    working = world["working"]

    html = client.get(f"/runs/{working.pk}/").content.decode()
    assert element(html, "run-cancel") is None and "run-cancel-dialog" not in html
    assert client.post(f"/runs/{working.pk}/cancel/").status_code == 403
    working.refresh_from_db()
    assert not working.cancel_requested


def test_operator_cancels_a_working_run_through_the_page(
    logged_in: Any, world: dict[str, Any]
) -> None:
    client = logged_in("olga", "operator")
    working = world["working"]
    html = client.get(f"/runs/{working.pk}/").content.decode()
    assert text(html, "run-cancel") == "Cancel run"
    assert f'action="/runs/{working.pk}/cancel/"' in html
    assert element(html, "run-cancel-confirm") is not None

    response = client.post(f"/runs/{working.pk}/cancel/", follow=True)

    assert response.redirect_chain == [(f"/runs/{working.pk}/", 302)]
    working.refresh_from_db()
    assert working.cancel_requested and working.state == RunState.WORKING  # stops at next step
    html = response.content.decode()
    assert f"Run #{working.pk}: cancel requested." in html
    assert "Stopping" in text(html, "run-cancelling") and element(html, "run-cancel") is None
    assert AuditEvent.objects.filter(action="jobs.run.cancel", object_id=str(working.pk)).exists()


def test_cancel_of_a_queued_run_ends_it_and_a_finished_one_is_refused(
    logged_in: Any, world: dict[str, Any]
) -> None:
    client = logged_in("olga", "operator")
    queued = services.start_run(world["other"], trigger=Trigger.MANUAL, acting_user=None)

    client.post(f"/runs/{queued.pk}/cancel/")
    queued.refresh_from_db()
    assert (queued.state, queued.result) == (RunState.FINISHED, RunResult.CANCELLED)

    response = client.post(f"/runs/{queued.pk}/cancel/", follow=True)
    assert "has already finished" in response.content.decode()
    assert client.get(f"/runs/{queued.pk}/cancel/").status_code == 405


@pytest.mark.parametrize("who", ["no role", "scoped to another policy"])
def test_others_get_404_for_the_run_and_its_fragments(
    logged_in: Any, world: dict[str, Any], who: str
) -> None:
    if who == "no role":
        client = logged_in("nobody")
    else:
        client = logged_in(
            "sam", "operator", object_types=["jobs.jobrun"], constraints={"policy__name": "other"}
        )
    pk = world["working"].pk

    for url in (f"/runs/{pk}/", f"/runs/{pk}/live/", f"/runs/{pk}/row/"):
        assert client.get(url).status_code == 404, url
    assert client.post(f"/runs/{pk}/cancel/").status_code == 404
    world["working"].refresh_from_db()
    assert not world["working"].cancel_requested


def test_scoped_operator_may_cancel_only_their_runs(logged_in: Any, world: dict[str, Any]) -> None:
    # Viewer of every run, operator only of the "other" policy's runs.
    client = logged_in("sam", "viewer")
    assign_role(
        user=get_user_model().objects.get(username="sam"),
        role="operator",
        object_types=["jobs.jobrun"],
        constraints={"policy__name": "other"},
        acting_user=None,
    )
    working = world["working"]
    assert element(client.get(f"/runs/{working.pk}/").content.decode(), "run-cancel") is None
    assert client.post(f"/runs/{working.pk}/cancel/").status_code == 403
    mine = services.start_run(world["other"], trigger=Trigger.MANUAL, acting_user=None)
    html = client.get(f"/runs/{mine.pk}/").content.decode()
    assert text(html, "run-cancel") == "Cancel run"


def test_fragments_answer_401_not_the_login_page_when_signed_out(
    client: Client, world: dict[str, Any]
) -> None:
    pk = world["working"].pk
    for url in (f"/runs/{pk}/live/", f"/runs/{pk}/row/", "/runs/running/"):
        response = client.get(url, headers={"HX-Request": "true"})
        assert response.status_code == 401, url
    assert client.get(f"/runs/{pk}/")["Location"].startswith("/login/")


# --- the dashboard's running-runs panel ----------------------------------------------------------


def test_running_panel_lists_active_runs_the_user_may_view(
    logged_in: Any, new_user: Any, world: dict[str, Any]
) -> None:
    client = logged_in("vera", "viewer")
    queued = services.start_run(world["other"], trigger=Trigger.MANUAL, acting_user=None)

    html = client.get("/runs/running/").content.decode()
    assert html.startswith('<div id="running-runs"')
    listed = [int(pk) for pk in re.findall(r'id="running-run-(\d+)"', html)]
    assert listed == [queued.pk, world["working"].pk]
    assert text(html, f"running-run-{world['working'].pk}").count("18 %") == 1

    scoped = new_user(
        "sam", "viewer", object_types=["jobs.jobrun"], constraints={"policy__name": "other"}
    )
    panel = running_runs(scoped)["running"]
    assert panel.allowed and [row.run.pk for row in panel.rows] == [queued.pk]
    assert not running_runs(new_user("nobody"))["running"].allowed


def test_running_panel_include_connects_its_socket(new_user: Any, world: dict[str, Any]) -> None:
    html = render_to_string("frontend/runs/_running.html", running_runs(new_user("vera", "viewer")))
    assert 'ws-connect="/ws/console/running/"' in html and 'id="running-runs"' in html
    assert "frontend/live.js" in html
    nobody = running_runs(new_user("x"))
    assert render_to_string("frontend/runs/_running.html", nobody).strip() == ""
