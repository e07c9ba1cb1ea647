"""With the websocket unavailable (every attempt closed, as behind a proxy that drops them), the
run page says so and falls back to polling: a restore run still reaches 100 % on screen without
a reload."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import Page, WebSocketRoute, expect

from jobs.models import JobRun
from storage import services as storage_services
from storage.models import RestorePoint
from tests.browser.conftest import log_in, off_the_loop, raw_image
from tests.storage.helpers import sha256


def test_without_websocket_the_run_page_polls_to_the_end(
    page: Page, backed_up, kvm_vms, make_user, celery_worker_process, tmp_path: Path
) -> None:
    refused: list[str] = []

    def refuse(ws: WebSocketRoute) -> None:
        refused.append(ws.url)
        ws.close(code=1011, reason="websockets are down")

    page.route_web_socket(re.compile(r"/ws/console/runs/\d+/$"), refuse)
    navigations: list[str] = []
    page.on("framenavigated", lambda f: navigations.append(f.url) if f == page.main_frame else None)
    polls: list[str] = []
    page.on("request", lambda r: polls.append(r.url) if r.url.endswith("/live/") else None)

    vm = kvm_vms[0]
    point = RestorePoint.objects.get(run=backed_up, vm__name=vm.name)
    target = tmp_path / "sda.raw"
    operator = make_user("olga", "operator")
    run: JobRun = off_the_loop(
        lambda: storage_services.start_restore(
            point,
            options={"what": "disk", "disk": "sda", "path": str(target), "format": "raw"},
            acting_user=operator,
        )
    )
    log_in(page, "olga")
    page.goto(f"/runs/{run.pk}/")
    loaded = len(navigations)
    expect(page.locator("#run-state")).to_have_text("Queued")
    expect(page.locator("#run-live-status")).to_contain_text("updating every 2 s")

    celery_worker_process("console")

    live = page.locator("#run-live")
    expect(live).to_have_attribute("data-run-state", "finished", timeout=90_000)
    assert live.get_attribute("data-run-result") == "succeeded", live.inner_text()
    expect(page.locator("#run-percent")).to_have_text("100 %")
    assert refused, "the page never tried its websocket"
    assert polls, "the page did not poll"
    assert len(navigations) == loaded, f"the page navigated: {navigations[loaded:]}"
    assert sha256(target) == sha256(raw_image(vm.disks[0], tmp_path / "sda-now.raw"))
