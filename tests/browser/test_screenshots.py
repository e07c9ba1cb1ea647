"""Screenshots of the main pages at 1280x800 (light, plus a dark dashboard) from a small real
estate: two KVM VMs backed up once, a second backup caught while it runs, a restore prepared.

Every run checks that each page renders its main element without a JavaScript error. With
``SCREENSHOTS_DIR`` set (``python -m tests.browser.screenshots`` sets it to docs/screenshots)
the PNGs are also written there, for the README.
"""

from __future__ import annotations

import os
import re
import struct
import threading
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from inventory.kvm.libvirt_env import guest_flush, guest_write
from inventory.models import VirtualMachine
from jobs import engine, services
from jobs.choices import Trigger
from storage.models import RestorePoint
from tests.browser.conftest import VIEWPORT, MiB, log_in

SCREENSHOTS_DIR = os.environ.get("SCREENSHOTS_DIR", "")
MIDWAY = re.compile(r"^[1-9][0-9]? %$")


@pytest.fixture
def vm_prefix() -> str:
    return "web"  # readable names in the docs: web-01, web-02


@pytest.fixture
def lifelike_disks() -> bool:
    return True


def shoot(page: Page, name: str, tmp_path: Path) -> None:
    page.wait_for_load_state("networkidle")
    path = tmp_path / f"{name}.png"
    page.screenshot(path=path, animations="disabled", caret="hide")
    width, height = struct.unpack(">II", path.read_bytes()[16:24])  # the PNG's IHDR
    assert (width, height) == (VIEWPORT["width"], VIEWPORT["height"]), name
    if SCREENSHOTS_DIR:
        Path(SCREENSHOTS_DIR).mkdir(parents=True, exist_ok=True)
        Path(SCREENSHOTS_DIR, f"{name}.png").write_bytes(path.read_bytes())


def test_screenshots_of_the_main_pages(
    page: Page, backed_up, policy, kvm_vms, tmp_path: Path
) -> None:
    vm = VirtualMachine.objects.get(name=kvm_vms[0].name)
    point = RestorePoint.objects.get(run=backed_up, vm=vm)
    log_in(page, "alice")

    page.goto("/")
    expect(page.locator("#dashboard-protection")).to_be_visible()
    shoot(page, "dashboard", tmp_path)
    page.locator("#theme-toggle").click()
    expect(page.locator("html")).to_have_attribute("data-bs-theme", "dark")
    shoot(page, "dashboard-dark", tmp_path)
    page.locator("#theme-toggle").click()  # the choice is remembered: back to light
    expect(page.locator("html")).to_have_attribute("data-bs-theme", "light")

    page.goto("/inventory/")
    expect(page.get_by_test_id("vm-row")).to_have_count(2)
    shoot(page, "inventory", tmp_path)

    page.goto(f"/inventory/vms/{vm.pk}/")
    expect(page.get_by_test_id("point-state")).to_have_count(1)
    shoot(page, "vm", tmp_path)

    page.goto(f"/policies/{policy.pk}/")
    expect(page.locator("#rule-preview-count")).to_have_attribute("data-count", "2")
    shoot(page, "policy-edit", tmp_path)

    page.goto("/repositories/")
    expect(page.get_by_text(policy.repository.name).first).to_be_visible()
    shoot(page, "repositories", tmp_path)

    query = f"vm={vm.pk}&point={point.pk}&what=disk&disk=sdb&format=raw"
    page.goto(f"/restore/?{query}&path=/srv/restore/{vm.name}-sdb.raw&step=summary")
    expect(page.locator("#restore-confirm")).to_be_visible()
    shoot(page, "restore-wizard", tmp_path)

    page.goto("/audit/")
    expect(page.locator("#audit-table")).to_be_visible()
    shoot(page, "audit", tmp_path)

    # A second, incremental backup with more to read, caught while it runs.
    for each in kvm_vms:
        for alias in each.aliases:
            guest_write(each.domain, alias, 8 * MiB, 20 * MiB, 0x5A)
            guest_flush(each.domain, alias)
    run = services.start_run(policy, trigger=Trigger.MANUAL, acting_user=backed_up.requested_by)
    page.goto(f"/runs/{run.pk}/")
    expect(page.locator("#run-live-status")).to_have_text("Live")
    worker = threading.Thread(target=_execute, args=(run.pk,))
    worker.start()
    try:
        expect(page.locator("#run-live")).to_have_attribute("data-run-state", "working")
        expect(page.get_by_test_id("run-disk").first).to_be_visible()
        shoot(page, "run-live", tmp_path)
        # Better still, data on the move; the run may be too quick for that on a fast machine.
        try:
            expect(page.locator("#run-percent")).to_have_text(MIDWAY, timeout=15_000)
        except AssertionError:
            pass
        else:
            shoot(page, "run-live", tmp_path)
    finally:
        worker.join(timeout=120)
    expect(page.locator("#run-live")).to_have_attribute("data-run-state", "finished")


def _execute(run_pk: int) -> None:
    from django.db import connections

    try:
        engine.execute_run(run_pk)
    finally:
        connections.close_all()
