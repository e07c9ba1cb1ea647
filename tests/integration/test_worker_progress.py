"""A real `celery worker` process runs a run enqueued by a service action; its progress events
reach websocket clients through the Redis channel layer, only for users allowed to see the run."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections

from backupconsole.asgi import application
from jobs import services
from jobs.choices import RunResult, Trigger
from jobs.models import JobRun
from tests.factories import PolicyFactory, VirtualDiskFactory, VirtualMachineFactory

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _headers(token: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Token {token}".encode()), (b"origin", b"http://127.0.0.1")]


def _setup(make_user: Any) -> dict[str, Any]:
    from rest_framework.authtoken.models import Token

    operator = make_user("olga", "operator")
    outsider = make_user("oscar")  # authenticated, but no role at all
    scoped = make_user(
        "sam", "viewer", object_types=["jobs.jobrun"], constraints={"policy__name": "other"}
    )
    vm = VirtualMachineFactory(name="web-1", connection__kind="hyperv")
    VirtualDiskFactory(vm=vm, device_key="vda")
    policy = PolicyFactory(name="nightly")
    policy.vms.set([vm])
    return {
        "operator": operator,
        "policy": policy,
        "tokens": {
            u.username: Token.objects.create(user=u).key for u in (operator, outsider, scoped)
        },
    }


async def _collect_until_finished(ws: WebsocketCommunicator, run_pk: int) -> list[dict[str, Any]]:
    events = []
    while True:
        event = await ws.receive_json_from(timeout=60)
        assert event["run"] == run_pk
        events.append(event)
        if event["state"] == "finished":
            return events


async def test_worker_progress_reaches_only_permitted_users(celery_worker_process, make_user):
    await sync_to_async(celery_worker_process)("proxy-it")
    world = await sync_to_async(_setup)(make_user)
    tokens = world["tokens"]

    watchers = {}
    for name in tokens:
        ws = WebsocketCommunicator(application, "/ws/events/", headers=_headers(tokens[name]))
        connected, _ = await ws.connect()
        assert connected, name
        watchers[name] = ws

    run = await sync_to_async(services.start_run)(
        world["policy"], trigger=Trigger.MANUAL, acting_user=world["operator"]
    )

    # The per-run socket: the operator may open it, the others are refused.
    run_ws = WebsocketCommunicator(
        application, f"/ws/runs/{run.pk}/", headers=_headers(tokens["olga"])
    )
    assert (await run_ws.connect())[0]
    for name in ("oscar", "sam"):
        refused = WebsocketCommunicator(
            application, f"/ws/runs/{run.pk}/", headers=_headers(tokens[name])
        )
        connected, code = await refused.connect()
        assert not connected and code == 4403

    events = await _collect_until_finished(watchers["olga"], run.pk)
    states = [e["state"] for e in events]
    assert states[0] == "starting" and states[-1] == "finished"
    assert "working" in states
    final = events[-1]
    assert final["result"] == RunResult.FAILED
    vm_task = next(t for t in final["tasks"] if t["kind"] == "vm")
    assert vm_task["name"] == "web-1" and "No connector" in vm_task["message"]

    # The per-run socket saw the same end state (it may have connected after "starting").
    run_events = await _collect_until_finished(run_ws, run.pk)
    assert run_events[-1]["result"] == RunResult.FAILED

    for name in ("oscar", "sam"):
        assert await watchers[name].receive_nothing(timeout=1.5), f"{name} received an event"

    saved = await sync_to_async(JobRun.objects.select_related("proxy").get)(pk=run.pk)
    assert saved.proxy is not None and saved.proxy.name == "proxy-it"
    assert saved.result == RunResult.FAILED and saved.finished_at is not None

    for ws in [*watchers.values(), run_ws]:
        await ws.disconnect()
    # sync_to_async ran ORM calls on a worker thread: close its connection before teardown.
    await sync_to_async(connections.close_all)()
