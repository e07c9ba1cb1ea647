"""A viewer follows the runs in the browser but restores nothing: no restore button anywhere it
looks, and the restore wizard's URL answers 403. An operator, on the same pages, gets them."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from inventory.models import VirtualMachine
from storage.models import RestorePoint
from tests.browser.conftest import log_in

RESTORE_LINKS = 'a[href^="/restore/"]'


def test_a_viewer_sees_runs_but_no_restore_and_gets_403(
    page: Page, backed_up, kvm_vms, make_user
) -> None:
    make_user("victor", "viewer")
    make_user("olga", "operator")
    vm = VirtualMachine.objects.get(name=kvm_vms[0].name)
    point = RestorePoint.objects.get(run=backed_up, vm=vm)
    repository = backed_up.policy.repository
    log_in(page, "victor")

    page.locator('[data-nav="runs"]').click()
    row = page.locator(f"#run-row-{backed_up.pk}")
    expect(row.get_by_test_id("run-status")).to_have_text("Succeeded")
    row.get_by_role("link", name=f"Backup run {backed_up.pk}").click()
    expect(page).to_have_url(f"/runs/{backed_up.pk}/")
    expect(page.locator("#run-result")).to_have_text("Succeeded")
    expect(page.get_by_test_id("run-vm")).to_have_count(2)
    expect(page.locator(RESTORE_LINKS)).to_have_count(0)
    expect(page.locator("#run-cancel")).to_have_count(0)

    page.goto(f"/inventory/vms/{vm.pk}/")
    expect(page.get_by_test_id("point-state")).to_have_count(1)
    expect(page.get_by_test_id("point-restore")).to_have_count(0)
    expect(page.locator(RESTORE_LINKS)).to_have_count(0)

    page.goto(f"/repositories/{repository.pk}/")
    expect(page.locator(f"#restore-point-{point.pk}")).to_be_visible()
    expect(page.locator(RESTORE_LINKS)).to_have_count(0)

    for url in ("/restore/", f"/restore/?vm={vm.pk}&point={point.pk}"):
        response = page.goto(url)
        assert response is not None and response.status == 403, url

    # The same pages offer the restore to an operator, so the absence above is the role's doing.
    page.goto("/")
    page.get_by_role("button", name="Log out").click()
    log_in(page, "olga")
    page.goto(f"/inventory/vms/{vm.pk}/")
    expect(page.get_by_test_id("point-restore")).to_have_count(1)
    page.goto(f"/repositories/{repository.pk}/")
    expect(page.locator(f"#restore-point-{point.pk} {RESTORE_LINKS}")).to_have_count(1)
    response = page.goto(f"/restore/?vm={vm.pk}&point={point.pk}")
    assert response is not None and response.status == 200
