"""Add a KVM connection and sync it through the inventory pages: a real Celery worker discovers
the VMs of a real libvirtd, and the connection page shows it without a reload."""

from __future__ import annotations

import re
import time

from playwright.sync_api import Page, expect

from inventory.models import Connection, VirtualMachine
from tests.browser.conftest import log_in


def test_add_a_kvm_connection_and_sync_it(
    page: Page, admin_user, libvirt_env, kvm_vms, celery_worker_process
) -> None:
    celery_worker_process("console")  # consumes the console queue, where syncs go
    log_in(page, "alice")
    page.locator('[data-nav="inventory"]').click()
    expect(page.locator("#connections-empty")).to_be_visible()
    page.locator("#connection-add").click()

    form = page.locator("#connection-form")
    # The kind shown selected is the one whose fields the form shows.
    kind = form.get_by_label("Kind").input_value()
    expect(form.locator("#connection-fields")).to_have_attribute("data-kind", kind)
    assert kind == "kvm"  # the default kind
    form.get_by_label("Name").fill("kvm-lab")
    form.get_by_label("libvirt URI, socket or host").fill(str(libvirt_env.socket_path))
    form.locator("#connection-save").click()

    # Saved after a successful test, and the first sync is queued at once; the status card
    # polls while it is queued, then shows the outcome.
    expect(page).to_have_url(re.compile(r"/inventory/connections/\d+/$"))
    connection = Connection.objects.get(name="kvm-lab")
    assert page.url.endswith(f"/inventory/connections/{connection.pk}/")
    status = page.locator("#connection-status")
    state = status.get_by_test_id("sync-state")
    expect(state).to_have_attribute("data-state", "synced", timeout=60_000)
    first = Connection.objects.get(pk=connection.pk).last_synced_at

    # "Sync now" syncs again: the worker records a later sync, and the card shows it.
    page.locator("#connection-sync").click()
    deadline = time.monotonic() + 60
    while Connection.objects.get(pk=connection.pk).last_synced_at == first:
        assert time.monotonic() < deadline, "the requested sync did not run"
        time.sleep(0.5)
    expect(state).to_have_attribute("data-state", "synced", timeout=60_000)
    expect(status.get_by_test_id("vm-count")).to_have_text("2 present")
    assert set(VirtualMachine.objects.values_list("name", flat=True)) == {vm.name for vm in kvm_vms}

    # The inventory lists both VMs, unprotected so far.
    status.get_by_test_id("vm-count").click()
    rows = page.get_by_test_id("vm-row")
    expect(rows).to_have_count(2)
    for vm in kvm_vms:
        row = rows.filter(has_text=vm.name)
        expect(row.get_by_test_id("vm-policies")).to_have_text("Unprotected")
