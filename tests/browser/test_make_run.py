"""What a newcomer does after `make run`, in the browser only: the real embedded console
(``manage.py migrate`` + ``manage.py runconsole``: SQLite, worker threads and scheduler in the
process, in-memory channel layer), a KVM host's libvirt socket, and nothing else. Sign in with
the administrator password, add the host (its VMs are discovered by themselves), create a
repository and a policy, run it and watch the run page reach 100 % live, then restore a disk
through the wizard to a file holding exactly the disk's content."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, WebSocket, expect

from inventory.kvm.libvirt_env import guest_flush, guest_write
from tests.browser.conftest import MiB, log_in, raw_image, vm_pattern
from tests.integration.embedded_console import EmbeddedConsole
from tests.storage.helpers import sha256

# In the run page's fragments that its websocket pushes.
RUN_STATE = re.compile(r'data-run-state="([a-z_]+)"')
RUN_PERCENT = re.compile(r'id="run-percent">(\d+) %')


@pytest.fixture
def console(tmp_path: Path) -> Iterator[EmbeddedConsole]:
    """Overrides the conftest's console (uvicorn on the test database and Redis): here the
    ``page`` fixture opens the embedded console, as `make run` starts it."""
    with EmbeddedConsole(tmp_path / "embedded") as server:
        yield server


def test_a_newcomer_protects_a_vm_watches_it_live_and_restores_a_disk(
    page: Page, console: EmbeddedConsole, libvirt_env, kvm_vms, tmp_path: Path
) -> None:
    for vm in kvm_vms:  # enough for the run to last a while: its page sees it working
        for index, alias in enumerate(vm.aliases):
            guest_write(vm.domain, alias, 8 * MiB, 20 * MiB, 0x61 + index)
            guest_flush(vm.domain, alias)
    frames: list[str] = []
    page.on("websocket", lambda ws: _collect(ws, frames))
    log_in(page, "admin", console.password)

    # Add the KVM host; its first sync runs by itself and the page shows it when done.
    page.locator('[data-nav="inventory"]').click()
    page.locator("#connection-add").click()
    form = page.locator("#connection-form")
    with page.expect_response(lambda r: r.request.headers.get("hx-target") == "connection-fields"):
        form.get_by_label("Kind").select_option(label="KVM / libvirt host")  # HTMX: its fields
    expect(form.locator("#connection-fields")).to_have_attribute("data-kind", "kvm")
    form.locator("#id_name").fill("this-host")
    form.get_by_label("libvirt URI, socket or host").fill(str(libvirt_env.socket_path))
    form.locator("#connection-save").click()
    status = page.locator("#connection-status")
    expect(status.get_by_test_id("sync-state")).to_have_attribute("data-state", "synced")
    expect(status.get_by_test_id("vm-count")).to_have_text("2 present")

    page.locator('[data-nav="repositories"]').click()
    page.locator("#repository-new").click()
    form = page.locator("#repository-form")
    form.locator("#id_name").fill("local")
    form.locator("#id_location").fill(str(tmp_path / "repo"))
    form.locator("#id_passphrase").fill("a long newcomer passphrase")
    form.locator("#id_passphrase_again").fill("a long newcomer passphrase")
    form.get_by_role("button", name="Create repository").click()
    expect(page).to_have_url(re.compile(r"/repositories/\d+/$"))

    page.locator('[data-nav="policies"]').click()
    page.get_by_role("link", name="New policy").first.click()
    form = page.locator("#policy-form")
    form.locator("#id_name").fill("my-vms")
    form.locator("#id_repository").select_option(label="local")
    rule = form.locator('#policy-rules tr[data-rule="0"]')
    rule.locator("select").select_option(label="Name pattern")
    rule.locator('input[type="text"]').press_sequentially(vm_pattern(kvm_vms))
    expect(page.locator("#rule-preview-count")).to_have_attribute("data-count", "2")
    form.locator("#id_consistency").select_option(label="Crash-consistent")
    form.locator("#policy-save").click()

    # Run it: the run page follows it over its websocket, without reloading.
    page.locator("#policy-run-now").click()
    expect(page).to_have_url(re.compile(r"/runs/\d+/$"))
    loaded = page.url
    live = page.locator("#run-live")
    expect(live).to_have_attribute("data-run-state", "finished", timeout=120_000)
    assert live.get_attribute("data-run-result") == "succeeded", (
        page.locator("#run-reason").all_inner_texts(),
        console.log_tail(),
    )
    expect(page.locator("#run-percent")).to_have_text("100 %")
    expect(page.get_by_test_id("run-vm")).to_have_count(2)
    assert page.url == loaded
    # Pushed over the socket while it ran: a part done, then all of it.
    percents = [int(p) for frame in frames for p in RUN_PERCENT.findall(frame)]
    assert any(p < 100 for p in percents) and percents[-1] == 100, percents
    states = [state for frame in frames for state in RUN_STATE.findall(frame)]
    assert "working" in states and states[-1] == "finished", states

    # Restore the first VM's first disk through the wizard, to a raw file.
    vm = kvm_vms[0]
    target = tmp_path / "restored-sda.raw"
    page.goto("/restore/")
    wizard = page.locator("#restore-wizard")
    wizard.get_by_label(vm.name).check()
    wizard.locator("#restore-next").click()
    expect(wizard).to_have_attribute("data-step", "point")
    expect(wizard.locator('input[name="point"]')).to_be_checked()
    wizard.locator("#restore-next").click()
    expect(wizard).to_have_attribute("data-step", "what")
    wizard.get_by_label("One disk, to a file").check()
    wizard.get_by_label("Disk", exact=True).select_option(value="sda")
    wizard.locator("#restore-next").click()
    expect(wizard).to_have_attribute("data-step", "where")
    wizard.get_by_label("File to write").fill(str(target))
    wizard.get_by_label("File format").select_option(value="raw")
    wizard.locator("#restore-next").click()
    expect(page.locator("#restore-summary")).to_contain_text(str(target))
    page.locator("#restore-confirm").click()

    expect(page.locator("#run-result")).to_have_text("Succeeded", timeout=90_000)
    expect(page.locator("#run-percent")).to_have_text("100 %")
    assert sha256(target) == sha256(raw_image(vm.disks[0], tmp_path / "expected-sda.raw"))


def _collect(ws: WebSocket, frames: list[str]) -> None:
    ws.on("framereceived", lambda payload: frames.append(str(payload)))
