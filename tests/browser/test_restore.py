"""Restore a disk through the restore wizard (VM → restore point → what → where → summary →
confirm) to a raw file; a real worker writes it, and it holds exactly the disk's content at
backup time, although the guest has written to the disk since."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Page, expect

from inventory.kvm.libvirt_env import guest_flush, guest_write
from jobs.choices import RunKind
from jobs.models import JobRun
from tests.browser.conftest import MiB, log_in, raw_image
from tests.storage.helpers import sha256


def test_restore_a_disk_to_a_raw_file_through_the_wizard(
    page: Page, backed_up, kvm_vms, make_user, celery_worker_process, tmp_path: Path
) -> None:
    vm = kvm_vms[1]
    # The disk as the backup saw it (nothing wrote to it since), then the guest moves on.
    at_backup = raw_image(vm.disks[1], tmp_path / "sdb-at-backup.raw")
    guest_write(vm.domain, vm.aliases[1], 2 * MiB, MiB, 0xEE)
    guest_flush(vm.domain, vm.aliases[1])
    assert sha256(raw_image(vm.disks[1], tmp_path / "sdb-now.raw")) != sha256(at_backup)
    target = tmp_path / "restored" / "sdb.raw"
    target.parent.mkdir()

    celery_worker_process("console")
    make_user("olga", "operator")
    log_in(page, "olga")
    page.goto("/restore/")
    wizard = page.locator("#restore-wizard")

    expect(wizard).to_have_attribute("data-step", "vm")
    wizard.get_by_label(vm.name).check()
    wizard.locator("#restore-next").click()

    expect(wizard).to_have_attribute("data-step", "point")
    expect(wizard.locator("#restore-points tbody tr")).to_have_count(1)
    expect(wizard.locator('input[name="point"]')).to_be_checked()  # the newest, preselected
    wizard.locator("#restore-next").click()

    expect(wizard).to_have_attribute("data-step", "what")
    wizard.get_by_label("One disk, to a file").check()
    wizard.get_by_label("Disk", exact=True).select_option(value="sdb")
    wizard.locator("#restore-next").click()

    expect(wizard).to_have_attribute("data-step", "where")
    wizard.get_by_label("File to write").fill(str(target))
    wizard.get_by_label("File format").select_option(value="raw")
    wizard.locator("#restore-next").click()

    expect(wizard).to_have_attribute("data-step", "summary")
    summary = page.locator("#restore-summary")
    expect(summary).to_contain_text(vm.name)
    expect(summary).to_contain_text(str(target))
    assert not target.exists()  # nothing happens before the confirmation
    page.locator("#restore-confirm").click()

    run = JobRun.objects.get(kind=RunKind.RESTORE)
    expect(page).to_have_url(f"/runs/{run.pk}/")
    expect(page.locator("#run-result")).to_have_text("Succeeded", timeout=90_000)
    expect(page.locator("#run-percent")).to_have_text("100 %")
    expect(page.locator("#run-details")).to_contain_text(str(target))

    assert sha256(target) == sha256(at_backup)
