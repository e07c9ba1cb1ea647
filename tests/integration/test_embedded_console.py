"""`make run` end to end: the real all-in-one process (``manage.py migrate`` then
``manage.py runconsole``, embedded mode: SQLite, in-process Celery worker threads and beat,
in-memory channel layer) backs a running KVM VM of a private libvirtd up, driven only over HTTP
and a websocket, and restores its disk to a file equal to the disk's content."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from asgiref.sync import async_to_sync

from backupconsole.embedded import ThreadSafeInMemoryChannelLayer
from inventory.kvm.libvirt_env import guest_flush, guest_write
from tests.browser.conftest import raw_image
from tests.integration.embedded_console import EmbeddedConsole
from tests.kvm.conftest import kvm_domain, libvirt_conn, libvirt_env  # noqa: F401 - fixtures
from tests.storage.helpers import sha256

pytestmark = pytest.mark.integration
MiB = 1024 * 1024


@pytest.fixture
def console(tmp_path: Path) -> Iterator[EmbeddedConsole]:
    with EmbeddedConsole(tmp_path / "data") as server:
        yield server


def _disk_progress(event: dict[str, Any]) -> tuple[int, int]:
    """Bytes done and total over the run's disk tasks (what the run page shows as a %)."""
    disks = [task for task in event["tasks"] if task["kind"] == "disk"]
    return sum(t["bytes_done"] for t in disks), sum(t["bytes_total"] for t in disks)


def _socket(console: EmbeddedConsole, path: str) -> Any:
    return websockets.connect(
        console.ws_url(path),
        additional_headers={"Authorization": f"Token {console.token}"},
        origin=websockets.Origin(console.url),
        proxy=None,
    )


async def _until_finished(socket: Any, run_pk: int) -> list[dict[str, Any]]:
    """The events of run ``run_pk`` on ``socket``, up to the one that says it finished."""
    events: list[dict[str, Any]] = []
    while not events or events[-1]["state"] != "finished":
        event = json.loads(await asyncio.wait_for(socket.recv(), timeout=90))
        if event["run"] == run_pk:
            events.append(event)
    return events


async def _run_and_follow(
    console: EmbeddedConsole, start: Callable[[], int]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Start a run and follow it live: on ``/ws/runs/<pk>/``, opened once the run exists, and
    on ``/ws/events/``, opened before, so no event of a quick run can be missed."""
    async with _socket(console, "/ws/events/") as every_run:
        run_pk = await asyncio.to_thread(start)
        async with _socket(console, f"/ws/runs/{run_pk}/") as this_run:
            return await asyncio.gather(
                _until_finished(this_run, run_pk), _until_finished(every_run, run_pk)
            )


def test_make_run_backs_up_a_kvm_vm_live_and_restores_its_disk(
    console: EmbeddedConsole,
    libvirt_env,  # noqa: F811 - the fixture
    kvm_domain,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    dom, aliases = kvm_domain.domain, kvm_domain.aliases
    for index, alias in enumerate(aliases):
        guest_write(dom, alias, index * 3 * MiB, 24 * MiB, 0x51 + index)
        guest_flush(dom, alias)
    api = console.api()

    # Add the host: its first inventory sync is queued by adding it.
    created = api.post(
        "/api/inventory/connections/",
        json={"name": "this-host", "kind": "kvm", "address": str(libvirt_env.socket_path)},
    )
    assert created.status_code == 201, created.text
    connection = created.json()["id"]
    vm = console.wait_for(
        lambda: _only(
            api.get("/api/inventory/vms/", params={"connection": connection, "q": kvm_domain.name})
        ),
        "the VM to appear after the first sync",
    )
    assert vm["power_state"] == "on", vm

    repository = api.post(
        "/api/storage/repositories/",
        json={
            "name": "local",
            "kind": "filesystem",
            "location": str(tmp_path / "repo"),
            "passphrase": "embedded passphrase",
        },
    )
    assert repository.status_code == 201, repository.text
    policy = api.post(
        "/api/jobs/policies/",
        json={
            "name": "this-vm",
            "repository": repository.json()["id"],
            "vms": [vm["id"]],
            "options": {"consistency": "crash"},
        },
    )
    assert policy.status_code == 201, policy.text

    # Run it and follow it live on its websocket.
    def run_now() -> int:
        started = api.post(f"/api/jobs/policies/{policy.json()['id']}/run/")
        assert started.status_code == 202, started.text
        return int(started.json()["id"])

    followed, everything = asyncio.run(_run_and_follow(console, run_now))
    run = everything[0]["run"]
    final = followed[-1]
    assert final["result"] == "succeeded", (final["reason"], console.log_tail())
    assert everything[-1] == final  # the run's own socket saw its end as it happened
    progress = [_disk_progress(event) for event in everything]
    done = [d for d, _ in progress]
    assert done == sorted(done), f"bytes done went back: {progress}"
    assert any(0 < d < t for d, t in progress), f"no progress between 0 and 100 %: {progress}"
    final_done, final_total = _disk_progress(final)
    assert final_total > 0 and final_done == final_total, "the run ends at 100 %"
    assert {t["state"] for t in final["tasks"] if t["kind"] == "disk"} == {"succeeded"}

    # The restore point, as the API shows it.
    points = api.get("/api/storage/restore-points/", params={"vm": vm["id"]}).json()["results"]
    assert len(points) == 1 and points[0]["run"] == run, points
    point = points[0]
    assert sorted(d["device_key"] for d in point["disks"]) == ["sda", "sdb"]
    assert point["read_bytes"] >= 2 * 24 * MiB and point["stored_bytes"] > 0
    assert point["consistency"] == "crash", point

    # Restore the first disk to a file, through the API; it equals the disk's content.
    target = tmp_path / "restored-sda.raw"
    restore = api.post(
        f"/api/storage/restore-points/{point['id']}/restore/",
        json={"what": "disk", "disk": "sda", "to": "file", "path": str(target), "format": "raw"},
    )
    assert restore.status_code == 202, restore.text
    restore_run = console.wait_for(
        lambda: _finished(api.get(f"/api/jobs/runs/{restore.json()['id']}/").json()),
        "the restore run to finish",
    )
    assert restore_run["result"] == "succeeded", (restore_run["reason"], console.log_tail())
    expected = raw_image(kvm_domain.disks[0], tmp_path / "expected-sda.raw")
    assert sha256(target) == sha256(expected)


def _only(response: Any) -> dict[str, Any] | None:
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    return results[0] if len(results) == 1 else None


def _finished(run: dict[str, Any]) -> dict[str, Any] | None:
    return run if run["state"] == "finished" else None


def test_the_channel_layer_hands_a_worker_threads_event_over_at_once() -> None:
    """Embedded mode's channel layer: a worker thread publishes (``async_to_sync``, its own
    event loop) to a consumer waiting on the server's loop. With asyncio's debug checks on,
    touching the server loop's futures from that thread would raise; and nothing else wakes
    this loop, so a late wake-up would show as a timeout."""
    layer = ThreadSafeInMemoryChannelLayer()
    event = {"type": "run.update", "run": 1}

    async def server() -> float:
        asyncio.get_running_loop().set_debug(True)
        channel = await layer.new_channel()
        await layer.group_add("run.1", channel)
        waiting = asyncio.ensure_future(layer.receive(channel))
        await asyncio.sleep(0)  # the consumer now waits on its queue
        publisher = threading.Thread(target=async_to_sync(layer.group_send), args=("run.1", event))
        started = time.monotonic()
        publisher.start()
        assert await asyncio.wait_for(waiting, timeout=5) == event
        took = time.monotonic() - started
        await asyncio.to_thread(publisher.join, 5)  # its send completes on this loop
        assert not publisher.is_alive()
        return took

    # In a thread of its own: the plain in-memory layer leaves this loop hanging for good.
    took: list[float] = []
    runner = threading.Thread(target=lambda: took.append(asyncio.run(server())), daemon=True)
    runner.start()
    runner.join(timeout=15)
    assert took and took[0] < 1.0, f"the event did not arrive at once: {took}"
