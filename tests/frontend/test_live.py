"""Live updates of the runs pages: over the Redis channel layer, the console's websocket consumers
send the very HTML the fragment endpoints serve (so a reload shows what the live view showed)
after ``publish_run``, and nothing to a user who may not view the run."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.db import connections
from django.test import Client
from django.utils import timezone

from backupconsole.asgi import application
from backupconsole.models import RoleAssignment
from backupconsole.services import assign_role, revoke_role
from jobs.choices import RunState, TaskKind, TaskState, Trigger
from jobs.models import JobRun, RunTask
from jobs.progress import publish_run
from tests.factories import PolicyFactory, VirtualDiskFactory, VirtualMachineFactory
from tests.frontend.test_runs import text

pytestmark = pytest.mark.django_db(transaction=True)

GiB = 2**30
ZONE = "Asia/Kolkata"  # UTC+05:30 all year: the socket renders times in the cookie's zone too


class Browser:
    """A signed-in user's cookies, for both the HTTP client and websocket connections."""

    def __init__(self, username: str, role: str | None = None, **assignment: Any) -> None:
        self.user = get_user_model().objects.create_user(username=username, password="x")
        if role:
            assign_role(user=self.user, role=role, acting_user=None, **assignment)
        self.client = Client()
        self.client.force_login(self.user)
        self.client.cookies["console_tz"] = ZONE

    def headers(self) -> list[tuple[bytes, bytes]]:
        cookie = "; ".join(f"{name}={morsel.value}" for name, morsel in self.client.cookies.items())
        return [(b"cookie", cookie.encode()), (b"origin", b"http://127.0.0.1")]

    def get(self, url: str) -> str:
        response = self.client.get(url)
        assert response.status_code == 200, (url, response.status_code)
        return str(response.content.decode())


def _world() -> dict[str, Any]:
    policy = PolicyFactory(name="nightly-gold")
    vm = VirtualMachineFactory(name="web-1")
    disk = VirtualDiskFactory(vm=vm, device_key="vda")
    run = JobRun.objects.create(
        policy=policy, trigger=Trigger.MANUAL, state=RunState.WORKING, started_at=timezone.now()
    )
    vm_task = RunTask.objects.create(
        run=run, kind=TaskKind.VM, name="web-1", vm=vm, state=TaskState.RUNNING
    )
    disk_task = RunTask.objects.create(
        run=run,
        parent=vm_task,
        kind=TaskKind.DISK,
        name="vda",
        vm=vm,
        disk=disk,
        state=TaskState.RUNNING,
        bytes_done=1 * GiB,
        bytes_total=4 * GiB,
        rate_bps=2**27,
    )
    return {
        "run": run,
        "disk_task": disk_task,
        "olga": Browser("olga", "operator"),
        "oscar": Browser("oscar"),  # signed in, no role at all
        "sam": Browser(
            "sam", "viewer", object_types=["jobs.jobrun"], constraints={"policy__name": "other"}
        ),
    }


def _progress(task: RunTask, done: int) -> None:
    RunTask.objects.filter(pk=task.pk).update(bytes_done=done)
    publish_run(task.run_id)


@pytest.fixture
async def world() -> AsyncIterator[dict[str, Any]]:
    yield await sync_to_async(_world)()
    # sync_to_async ran ORM calls on a worker thread: close its connection before teardown.
    await sync_to_async(connections.close_all)()


async def _connect(path: str, browser: Browser | None) -> WebsocketCommunicator:
    headers = browser.headers() if browser else [(b"origin", b"http://127.0.0.1")]
    socket = WebsocketCommunicator(application, path, headers=headers)
    connected, code = await socket.connect()
    assert connected, (path, code)
    return socket


async def _refused(path: str, browser: Browser | None) -> int:
    headers = browser.headers() if browser else [(b"origin", b"http://127.0.0.1")]
    socket = WebsocketCommunicator(application, path, headers=headers)
    connected, code = await socket.connect()
    assert not connected
    return int(code)


async def test_run_page_socket_sends_the_polled_fragment_after_each_update(
    world: dict[str, Any],
) -> None:
    olga, run = world["olga"], world["run"]
    fragment_url = f"/runs/{run.pk}/live/"
    socket = await _connect(f"/ws/console/runs/{run.pk}/", olga)

    # On connect: the current state, so nothing published before the socket opened is lost.
    first = await socket.receive_from(timeout=10)
    assert first == await sync_to_async(olga.get)(fragment_url)
    assert text(first, "run-percent") == "25 %"
    local = timezone.localtime(run.started_at, timezone=ZoneInfo(ZONE))
    assert text(first, "run-started") == local.strftime("%Y-%m-%d %H:%M:%S")

    await sync_to_async(_progress)(world["disk_task"], 3 * GiB)

    update = await socket.receive_from(timeout=10)
    assert update.startswith('<div id="run-live"')  # swapped in by id (hx-swap-oob default)
    assert text(update, "run-percent") == "75 %"
    assert update == await sync_to_async(olga.get)(fragment_url)  # a reload shows the same
    page = await sync_to_async(olga.get)(f"/runs/{run.pk}/")
    assert update in page
    await socket.disconnect()


async def test_list_rows_and_running_panel_sockets_send_their_fragments(
    world: dict[str, Any],
) -> None:
    olga, run = world["olga"], world["run"]
    rows = await _connect(f"/ws/console/events/?runs={run.pk},999999999", olga)
    running = await _connect("/ws/console/running/", olga)
    assert await rows.receive_from(timeout=10) == await sync_to_async(olga.get)(
        f"/runs/{run.pk}/row/"
    )
    assert await running.receive_from(timeout=10) == await sync_to_async(olga.get)("/runs/running/")

    await sync_to_async(_progress)(world["disk_task"], 2 * GiB)

    row = await rows.receive_from(timeout=10)
    assert row.startswith(f'<tr id="run-row-{run.pk}"') and "50 %" in row
    assert row == await sync_to_async(olga.get)(f"/runs/{run.pk}/row/")
    panel = await running.receive_from(timeout=10)
    assert f'id="running-run-{run.pk}"' in panel and "50 %" in panel
    assert panel == await sync_to_async(olga.get)("/runs/running/")
    for socket in (rows, running):
        await socket.disconnect()


async def test_users_who_may_not_view_the_run_receive_nothing(world: dict[str, Any]) -> None:
    run = world["run"]
    run_path, rows_path = f"/ws/console/runs/{run.pk}/", f"/ws/console/events/?runs={run.pk}"

    # Signed out: no socket at all; no role, or a role on other runs only: not this run's.
    for path in (run_path, rows_path, "/ws/console/running/"):
        assert await _refused(path, None) == 4403
    for name in ("oscar", "sam"):
        assert await _refused(run_path, world[name]) == 4403
    oscar_rows = await _connect(rows_path, world["oscar"])
    sam_rows = await _connect(rows_path, world["sam"])
    oscar_running = await _connect("/ws/console/running/", world["oscar"])
    sam_running = await _connect("/ws/console/running/", world["sam"])
    # Sam may view some runs, so his panel arrives, without this run; Oscar's never does.
    first = await sam_running.receive_from(timeout=10)
    assert f"running-run-{run.pk}" not in first and "Nothing is running" in first
    watcher = await _connect(rows_path, world["olga"])
    await watcher.receive_from(timeout=10)

    await sync_to_async(_progress)(world["disk_task"], 4 * GiB)

    assert "100 %" in await watcher.receive_from(timeout=10)  # the update was published
    for socket in (oscar_rows, sam_rows, oscar_running, sam_running):
        assert await socket.receive_nothing(timeout=1.5)
        await socket.disconnect()
    await watcher.disconnect()


async def test_a_revoked_role_stops_the_updates(world: dict[str, Any]) -> None:
    olga, run = world["olga"], world["run"]
    socket = await _connect(f"/ws/console/runs/{run.pk}/", olga)
    await socket.receive_from(timeout=10)
    await sync_to_async(_progress)(world["disk_task"], 2 * GiB)
    assert "50 %" in await socket.receive_from(timeout=10)

    assignment = await sync_to_async(RoleAssignment.objects.get)(user=olga.user)
    await sync_to_async(revoke_role)(assignment, acting_user=None)
    await sync_to_async(_progress)(world["disk_task"], 3 * GiB)

    assert await socket.receive_nothing(timeout=1.5)
    await socket.disconnect()


async def test_the_json_api_sockets_are_unchanged(world: dict[str, Any]) -> None:
    run = world["run"]
    socket = await _connect(f"/ws/runs/{run.pk}/", world["olga"])
    await sync_to_async(_progress)(world["disk_task"], 2 * GiB)

    event = await socket.receive_json_from(timeout=10)

    assert event["run"] == run.pk and event["state"] == "working"
    assert [t["bytes_done"] for t in event["tasks"] if t["kind"] == "disk"] == [2 * GiB]
    await socket.disconnect()
