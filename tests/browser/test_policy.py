"""Create a repository on the repositories page, then a policy with a dynamic rule on the policies
page: the rule preview lists the VMs the rule matches before anything is saved."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Page, expect

from jobs.models import ProtectionPolicy
from storage.models import Repository
from tests.browser.conftest import log_in, vm_pattern


def test_repository_then_policy_with_a_dynamic_rule(
    page: Page, admin_user, kvm_connection, kvm_vms, tmp_path: Path
) -> None:
    log_in(page, "alice")

    page.locator('[data-nav="repositories"]').click()
    page.locator("#repository-new").click()
    form = page.locator("#repository-form")
    form.locator("#id_name").fill("primary")
    form.locator("#id_location").fill(str(tmp_path / "repo"))
    form.locator("#id_passphrase").fill("a long e2e passphrase")
    form.locator("#id_passphrase_again").fill("a long e2e passphrase")
    form.get_by_role("button", name="Create repository").click()
    repository = Repository.objects.get(name="primary")
    expect(page).to_have_url(f"/repositories/{repository.pk}/")
    assert (tmp_path / "repo").is_dir()  # initialised on disk, not only a row

    page.locator('[data-nav="policies"]').click()
    page.get_by_role("link", name="New policy").first.click()
    form = page.locator("#policy-form")
    form.locator("#id_name").fill("nightly-web")
    form.locator("#id_repository").select_option(label="primary")
    rule = form.locator('#policy-rules tr[data-rule="0"]')
    rule.locator("select").select_option(label="Name pattern")
    # Typed key by key (fill() sends no key events): the preview listens to keyup.
    rule.locator('input[type="text"]').press_sequentially(vm_pattern(kvm_vms))

    # The preview follows the typing (debounced HTMX post), with nothing saved yet.
    preview = page.locator("#rule-preview")
    expect(preview.locator("#rule-preview-count")).to_have_attribute("data-count", "2")
    for vm in kvm_vms:
        expect(preview.locator("#rule-preview-vms")).to_contain_text(vm.name)
    assert not ProtectionPolicy.objects.exists()

    form.locator("#id_consistency").select_option(label="Crash-consistent")
    form.locator("#policy-save").click()
    policy = ProtectionPolicy.objects.get(name="nightly-web")
    expect(page).to_have_url(f"/policies/{policy.pk}/")
    rules = list(policy.rules.values_list("kind", "value", "exclude"))
    assert rules == [("name_pattern", vm_pattern(kvm_vms), False)]
    assert set(policy.members.values_list("name", flat=True)) == {vm.name for vm in kvm_vms}
    # The saved policy's page shows the same preview, and offers to run it.
    expect(page.locator("#rule-preview-count")).to_have_attribute("data-count", "2")
    expect(page.locator("#policy-run-now")).to_be_visible()
