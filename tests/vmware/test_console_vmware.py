"""The console with a vCenter (vcsim), through its views as a browser would use them: add the
connection trusting its certificate's fingerprint, sync it for real, browse the tree and a VM's
page (disks vSphere cannot back up shown with the reason), back a VM up from its page, restore it
through the wizard as a new VM, and reset its CBT. Runs execute inline, as a proxy would."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

import pytest
from django.test import Client

from inventory.models import Connection, VirtualMachine
from inventory.tasks import sync_connection
from jobs import engine
from jobs.choices import RunKind, RunResult
from jobs.models import JobRun
from jobs.restore import execute_restore
from storage.models import RestorePoint
from tests.factories import VirtualMachineFactory
from tests.frontend.test_inventory import find, one, text
from tests.vmware.conftest import Vcsim, sha256_of_file
from tests.vmware.world import connect, logs, protect

pytestmark = pytest.mark.django_db(transaction=True)

NEW = "/inventory/connections/new/"
HX = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "connection-fields"}


@pytest.fixture
def admin(client: Client, admin_user: Any) -> Client:
    client.force_login(admin_user)
    return client


def page(client: Client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    return response.content.decode()


def followed(client: Client, url: str, data: dict[str, Any] | None = None) -> str:
    response = client.post(url, data or {}, follow=True)
    assert response.status_code == 200, (url, response.status_code)
    return response.content.decode()


def test_add_a_vcenter_trusting_its_certificate_then_browse_it(vcsim: Vcsim, admin: Client):
    fields = admin.get(NEW, {"kind": "vcenter", "name": "vc-lab"}, **HX).content.decode()
    assert 'data-kind="vcenter"' in fields and "vCenter Server host" in fields
    for name in ("address", "port", "username", "password", "verify_tls", "tls_fingerprint"):
        assert f'id="id_{name}"' in fields, name
    typed = {
        "name": "vc-lab",
        "kind": "vcenter",
        "address": vcsim.host,
        "port": vcsim.port,
        "username": vcsim.user,
        "password": vcsim.password,
        "verify_tls": "on",
    }

    # "Test connection" reads the certificate and offers to trust it; nothing is saved.
    probe = followed(admin, "/inventory/connections/probe/", typed)
    assert 'data-ok="false"' in probe and "does not trust" in probe
    assert text(one(probe, data_testid="probe-fingerprint")) == vcsim.thumbprint
    assert one(probe, id="connection-trust").attributes.count(
        ("data-fingerprint", vcsim.thumbprint)
    )

    # Saving without a pin is refused, with the fingerprint to compare and trust.
    refused = admin.post(NEW, typed)
    assert refused.status_code == 200 and not Connection.objects.exists()
    html = refused.content.decode()
    assert "Trust this certificate" in html and vcsim.thumbprint in html
    assert vcsim.password not in html

    saved = admin.post(NEW, {**typed, "tls_fingerprint": vcsim.thumbprint})
    connection = Connection.objects.get()
    assert (
        saved.status_code == 302 and saved["Location"] == f"/inventory/connections/{connection.pk}/"
    )
    assert connection.tls_fingerprint == vcsim.thumbprint and connection.has_secret

    synced = followed(admin, f"/inventory/connections/{connection.pk}/sync/")
    sync_connection(connection.pk)  # the queued task, run here as a worker would
    html = page(admin, f"/inventory/connections/{connection.pk}/")
    assert one(html, data_testid="sync-state").attributes.count(("data-state", "synced"))
    present = VirtualMachine.objects.filter(connection=connection, present=True).count()
    assert present >= 4 and f"{present} present" in text(one(html, data_testid="vm-count"))
    assert vcsim.password not in synced + html

    # The tree: datacenter → cluster → host → VM; the standalone host under the datacenter.
    tree = one(page(admin, "/inventory/"), id="inventory-tree")
    datacenter = one(tree, data_kind="datacenter")
    assert text(datacenter).split()[1] == vcsim.datacenter
    cluster = one(datacenter, data_kind="cluster")
    hosts = {text(h).split()[1]: h for h in find(cluster, data_kind="host")}
    assert {"DC0_C0_H0", "DC0_C0_H1", "DC0_C0_H2"} <= set(hosts)
    source = VirtualMachine.objects.get(connection=connection, name=vcsim.vms[0])
    assert (
        text(one(hosts[vcsim.host_name], data_vm=str(source.pk))) == f"{source.name} (Powered on)"
    )
    on_standalone = VirtualMachine.objects.get(connection=connection, name="DC0_H0_VM0")
    [standalone] = [h for h in find(datacenter, data_kind="host") if "DC0_H0 " in text(h)]
    assert find(standalone, data_vm=str(on_standalone.pk))
    assert not find(cluster, data_vm=str(on_standalone.pk))

    # The VM page: the RDM and the independent disk are listed, not backed up, with the reason.
    rdm = VirtualMachine.objects.get(connection=connection, name=vcsim.rdm_vm)
    html = page(admin, f"/inventory/vms/{rdm.pk}/")
    disks = find(html, data_testid="vm-disk")
    assert len(disks) == 3
    assert not find(disks[0], data_testid="disk-excluded")
    rdm_disk, independent = (text(one(d, data_testid="disk-excluded")) for d in disks[1:])
    assert rdm_disk.startswith("Not backed up: Physical-mode RDM disks cannot be snapshotted")
    assert independent == "Not backed up: Independent disks are not included in VM snapshots."
    assert [text(one(d, data_testid="disk-tracking")) for d in disks[1:]] == ["Excluded"] * 2
    assert vcsim.datacenter in text(one(html, id="vm-facts"))


def test_back_up_from_the_vm_page_and_restore_through_the_wizard(
    vcsim: Vcsim, admin: Client, admin_user: Any, tmp_path: Any
):
    vcsim.create_vm("console-src")
    connection = connect(vcsim, admin_user, name="vc-console")
    expected = vcsim.sha256_of_disk("console-src")
    protect(connection, ["console-src"], admin_user, tmp_path)
    vm = VirtualMachine.objects.get(connection=connection, name="console-src")

    html = page(admin, f"/inventory/vms/{vm.pk}/")
    assert "disabled" not in str(one(html, id="vm-backup-now"))
    response = admin.post(f"/inventory/vms/{vm.pk}/backup/")
    backup = JobRun.objects.get(kind=RunKind.BACKUP)
    assert response.status_code == 302 and response["Location"] == f"/runs/{backup.pk}/"
    engine.execute_run(backup.pk)
    backup.refresh_from_db()
    assert backup.result == RunResult.SUCCEEDED, (backup.reason, logs(backup))
    vcsim.write_disk("console-src", 0, b"changed after the backup" * 10)

    # The VM page links its new restore point to the wizard.
    html = page(admin, f"/inventory/vms/{vm.pk}/")
    point = RestorePoint.objects.get(run=backup)
    link = one(html, data_testid="point-restore")
    url = dict(link.attributes)["href"]
    assert url == f"/restore/?vm={vm.pk}&point={point.pk}"
    html = page(admin, url)
    assert 'data-step="what"' in html and 'name="what" value="vm"' in html

    state = {"vm": vm.pk, "point": point.pk, "what": "vm"}
    html = page(admin, f"/restore/?{urlencode({**state, 'step': 'where'})}")
    assert 'data-family="vsphere"' in html
    assert re.search(
        rf'<option value="{connection.pk}" selected>vc-console \(the original host\)', html
    )
    # The datastore holding the VM's disk, as the sync recorded it, is preselected.
    assert re.search(rf'<option value="{vcsim.datastore}" selected>{vcsim.datastore} — ', html)

    state |= {"connection": connection.pk, "name": "console-copy", "datastore": vcsim.datastore}
    html = page(admin, f"/restore/?{urlencode({**state, 'step': 'summary'})}")
    assert 'data-step="summary"' in html
    response = admin.post("/restore/", {**state, "start": ""})
    restore = JobRun.objects.get(kind=RunKind.RESTORE)
    assert response.status_code == 302 and response["Location"] == f"/runs/{restore.pk}/"
    execute_restore(restore.pk)
    restore.refresh_from_db()
    assert restore.result == RunResult.SUCCEEDED, (restore.reason, logs(restore))
    [disk] = vcsim.disks("console-copy")
    assert sha256_of_file(vcsim.local_path(disk.backing.fileName)) == expected
    run_page = page(admin, f"/runs/{restore.pk}/")
    assert "console-copy" in run_page and "Creating VM console-copy" in run_page

    # The same name again is refused next to the field once the inventory knows the new VM.
    sync_connection(connection.pk)
    html = page(admin, f"/restore/?{urlencode({**state, 'step': 'summary'})}")
    assert 'data-step="where"' in html and "never overwrite" in html


def test_reset_cbt_from_the_vm_page(
    vcsim: Vcsim, admin: Client, admin_user: Any, client: Client, make_user: Any
):
    vcsim.create_vm("console-cbt", fill=False)
    connection = connect(vcsim, admin_user, name="vc-cbt")
    vm = VirtualMachine.objects.get(connection=connection, name="console-cbt")

    html = page(admin, f"/inventory/vms/{vm.pk}/")
    form = one(html, id="vm-reset-cbt-form")
    assert "next backup reads every disk in full" in dict(form.attributes)["data-confirm"]
    done = followed(admin, f"/inventory/vms/{vm.pk}/reset-cbt/")
    assert "CBT reset on console-cbt: the next backup reads it in full." in done
    assert vcsim.find_vm("console-cbt").config.changeTrackingEnabled is True

    kvm_vm = VirtualMachineFactory(name="kvm-guest")
    assert not find(page(admin, f"/inventory/vms/{kvm_vm.pk}/"), id="vm-reset-cbt")

    admin.logout()
    client.force_login(make_user("vic", "viewer"))
    assert not find(page(client, f"/inventory/vms/{vm.pk}/"), id="vm-reset-cbt")
    assert client.post(f"/inventory/vms/{vm.pk}/reset-cbt/").status_code == 403
