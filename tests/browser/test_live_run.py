"""Run a policy from its page and watch the run page reach 100 % live: the updates arrive as
HTML fragments over the websocket (Channels on Redis) from a real Celery worker backing up real
KVM VMs; the page is never reloaded and does not poll while the socket is open."""

from __future__ import annotations

from playwright.sync_api import Page, WebSocket, expect

from jobs.choices import RunResult
from jobs.models import JobRun
from storage.models import RestorePoint
from tests.browser.conftest import log_in


def test_run_now_and_watch_the_run_page_reach_100_percent_live(
    page: Page, console, admin_user, policy, kvm_vms, celery_worker_process
) -> None:
    frames: dict[str, list[str]] = {}  # by socket URL

    def watch(ws: WebSocket) -> None:
        received = frames.setdefault(ws.url, [])
        ws.on("framereceived", lambda payload: received.append(str(payload)))

    page.on("websocket", watch)
    navigations: list[str] = []
    page.on("framenavigated", lambda f: navigations.append(f.url) if f == page.main_frame else None)
    polls: list[str] = []
    page.on("request", lambda r: polls.append(r.url) if r.url.endswith("/live/") else None)

    log_in(page, "alice")
    page.goto(f"/policies/{policy.pk}/")
    # No worker yet: the run stays queued, so the page is open before anything happens.
    page.locator("#policy-run-now").click()
    run = JobRun.objects.get(policy=policy)
    expect(page).to_have_url(f"/runs/{run.pk}/")
    expect(page.locator("#run-state")).to_have_text("Queued")
    expect(page.locator("#run-live-status")).to_have_text("Live")
    assert page.locator("#run-percent").inner_text() != "100 %"
    socket = console.url.replace("http://", "ws://") + f"/ws/console/runs/{run.pk}/"
    assert socket in frames, list(frames)
    loaded = len(navigations)
    polls.clear()

    celery_worker_process("console")  # the proxy: picks the run up from Redis

    live = page.locator("#run-live")
    expect(live).to_have_attribute("data-run-state", "finished", timeout=120_000)
    reason = page.locator("#run-reason").all_inner_texts()
    assert live.get_attribute("data-run-result") == "succeeded", reason
    expect(page.locator("#run-result")).to_have_text("Succeeded")
    expect(page.locator("#run-percent")).to_have_text("100 %")
    expect(page.get_by_test_id("run-vm")).to_have_count(2)

    assert len(navigations) == loaded, f"the page navigated: {navigations[loaded:]}"
    assert polls == [], "the page polled although its websocket was open"
    pushed = frames[socket]
    states = [_state(frame) for frame in pushed]
    # The first frame is the state at connect (queued); then the worker's updates, up to done.
    assert states[0] == "queued", states
    assert states[-1] == "finished", states
    assert {"starting", "working"} & set(states), states
    assert 'data-run-result="succeeded"' in pushed[-1]
    run.refresh_from_db()
    assert run.result == RunResult.SUCCEEDED
    assert RestorePoint.objects.filter(run=run).count() == 2


def _state(frame: str) -> str:
    marker = 'data-run-state="'
    start = frame.index(marker) + len(marker)
    return frame[start : frame.index('"', start)]
