"""The restore wizard: each step validated on the server with the user's permissions, the state
in the query string, and the final POST starting a restore run with the API's options."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from django.test import Client
from django.utils import timezone

from backupconsole.models import AuditEvent
from inventory.models import InventoryObject, VirtualDisk
from jobs.choices import RunKind, RunState
from jobs.models import JobRun
from storage.choices import RestorePointState
from storage.models import RestorePointDisk
from tests.factories import (
    ConnectionFactory,
    RepositoryFactory,
    RestorePointFactory,
    VirtualMachineFactory,
)

pytestmark = pytest.mark.django_db

URL = "/restore/"
GiB = 2**30


@pytest.fixture
def world(db: Any) -> dict[str, Any]:
    """A KVM VM with two restore points (two disks each), and another VM."""
    vm = VirtualMachineFactory(name="web-1", tags=["web"])
    now = timezone.now()
    old = RestorePointFactory(vm=vm, created_at=now - timedelta(days=1))
    new = RestorePointFactory(
        vm=vm,
        repository=old.repository,
        created_at=now,
        state=RestorePointState.VERIFIED,
        verified_at=now,
        logical_bytes=12 * GiB,
    )
    for point in (old, new):
        RestorePointDisk.objects.create(
            restore_point=point, device_key="vda", capacity_bytes=10 * GiB
        )
        RestorePointDisk.objects.create(
            restore_point=point, device_key="vdb", capacity_bytes=2 * GiB
        )
    other = VirtualMachineFactory(name="db-secret", tags=["db"])
    RestorePointFactory(vm=other)
    return {"vm": vm, "old": old, "new": new, "other": other}


@pytest.fixture
def operator(logged_in: Any) -> Client:
    return logged_in("otto", "operator")


def get(client: Client, **params: Any) -> str:
    response = client.get(f"{URL}?{urlencode(params)}")
    assert response.status_code == 200
    return response.content.decode()


def current_step(html: str) -> str:
    match = re.search(r'<form id="restore-wizard"[^>]*data-step="(\w+)"', html)
    assert match
    return match.group(1)


def error(html: str, field_id: str) -> str:
    match = re.search(
        rf'<div class="invalid-feedback d-block" id="{field_id}_error">(.*?)</div>', html
    )
    assert match, f"no error next to #{field_id}"
    return match.group(1)


def hidden(html: str) -> dict[str, str]:
    form = html[html.index('<form id="restore-wizard"') :]
    form = form[: form.index("</form>")]
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', form))


# --- permissions ---------------------------------------------------------------------------------


def test_a_viewer_gets_403_on_get_and_post(client: Client, logged_in: Any, world: Any) -> None:
    logged_in("vera", "viewer")

    assert client.get(URL).status_code == 403
    assert client.get(f"{URL}?vm={world['vm'].pk}&point={world['new'].pk}").status_code == 403
    body = {
        "vm": world["vm"].pk,
        "point": world["new"].pk,
        "what": "disk",
        "disk": "vda",
        "path": "/tmp/x.raw",
        "format": "raw",
    }
    assert client.post(URL, body).status_code == 403
    assert not JobRun.objects.exists()


def test_the_navigation_offers_restore_only_to_those_who_may(
    client: Client, logged_in: Any
) -> None:
    logged_in("vera", "viewer")
    assert 'data-nav="restore"' not in client.get("/").content.decode()
    client.logout()

    logged_in("otto", "operator")
    html = client.get(URL).content.decode()
    assert re.search(r'<a class="nav-link active" href="/restore/"\s+aria-current="page"', html)


def test_a_user_without_a_role_gets_403(client: Client, logged_in: Any) -> None:
    logged_in("nobody")
    assert client.get(URL).status_code == 403


def test_anonymous_is_sent_to_log_in(client: Client) -> None:
    response = client.get(URL)
    assert response.status_code == 302 and response["Location"].startswith("/login/")


@pytest.fixture
def web_owner(logged_in: Any) -> Client:
    """An operator of the VMs tagged "web" only (a VM owner's self-service role)."""
    return logged_in(
        "owner",
        "operator",
        object_types=["inventory.virtualmachine"],
        constraints={"tags__name": "web"},
    )


def test_a_scoped_user_sees_and_may_choose_only_their_vms(
    client: Client, web_owner: Client, world: Any
) -> None:
    html = get(client)
    assert "web-1" in html and "db-secret" not in html

    forged = get(client, vm=world["other"].pk, step="point")
    assert current_step(forged) == "vm"
    assert "Choose a VM you may restore" in error(forged, "id_vm")
    assert "db-secret" not in forged

    # Nor a restore point of another VM under one's own VM.
    other_point = world["other"].restore_points.get()
    html = get(client, vm=world["vm"].pk, point=other_point.pk, step="what")
    assert current_step(html) == "point"
    assert "Choose one of this VM" in error(html, "id_point")


def test_a_user_granted_restore_points_sees_only_those(
    client: Client, logged_in: Any, world: Any
) -> None:
    offsite = RestorePointFactory(vm=world["vm"], repository=RepositoryFactory(name="offsite"))
    RestorePointDisk.objects.create(restore_point=offsite, device_key="vda", capacity_bytes=GiB)
    logged_in(
        "auditor",
        "operator",
        object_types=["storage.restorepoint"],
        constraints={"repository__name": "offsite"},
    )

    html = get(client)
    assert f'data-vm="{world["vm"].pk}"' in html and "1 restore point" in html
    assert "db-secret" not in html
    html = get(client, vm=world["vm"].pk, step="point")
    assert re.findall(r'<tr data-point="(\d+)"', html) == [str(offsite.pk)]

    forged = get(client, vm=world["vm"].pk, point=world["new"].pk, step="what")
    assert current_step(forged) == "point"


def test_the_api_and_the_wizard_let_a_vm_owner_restore_the_same_points(
    web_owner: Client, world: Any
) -> None:
    owner = web_owner
    body = {"what": "disk", "disk": "vdb", "to": "file", "path": "/var/tmp/r.raw", "format": "raw"}

    mine = owner.post(
        f"/api/storage/restore-points/{world['new'].pk}/restore/", body, "application/json"
    )
    other = world["other"].restore_points.get()
    theirs = owner.post(
        f"/api/storage/restore-points/{other.pk}/restore/", body, "application/json"
    )

    assert mine.status_code == 202, mine.content
    assert theirs.status_code == 404
    html = get(owner, vm=world["vm"].pk, step="point")
    assert sorted(re.findall(r'<tr data-point="(\d+)"', html)) == sorted(
        [str(world["new"].pk), str(world["old"].pk)]
    )
    # The owner follows the restore they started, and no one else's run.
    run = JobRun.objects.get(pk=mine.json()["id"])
    someone_elses = JobRun.objects.create(kind=RunKind.RESTORE, trigger="manual")
    assert owner.get(f"/runs/{run.pk}/").status_code == 200
    assert owner.get(f"/runs/{someone_elses.pk}/").status_code == 404
    cancel = owner.post(f"/api/jobs/runs/{run.pk}/cancel/")
    assert cancel.status_code == 200 and cancel.json()["state"] == RunState.FINISHED
    assert owner.post(f"/api/jobs/runs/{someone_elses.pk}/cancel/").status_code == 404


def test_search_narrows_the_vm_list_with_the_shared_filterset(operator: Client, world: Any) -> None:
    html = get(operator, q="web")
    assert f'data-vm="{world["vm"].pk}"' in html
    assert f'data-vm="{world["other"].pk}"' not in html
    assert "2 restore points" in html


# --- the steps -----------------------------------------------------------------------------------


def test_full_path_restores_one_disk_to_a_file(operator: Client, world: Any) -> None:
    vm, point = world["vm"], world["new"]

    html = get(operator)
    assert 'id="restore-wizard"' in html and current_step(html) == "vm"
    assert re.search(rf'<input[^>]*name="vm" value="{vm.pk}" id="id_vm_\d+"', html)

    html = get(operator, vm=vm.pk, step="point")
    assert current_step(html) == "point" and hidden(html) == {"vm": str(vm.pk)}
    rows = re.findall(r'<tr data-point="(\d+)"', html)
    assert rows == [str(world["new"].pk), str(world["old"].pk)], "newest first"
    assert "Verified" in html and "12.0\u00a0GiB" in html
    # The newest usable point is preselected.
    assert re.search(rf'value="{point.pk}" id="id_point_0"\s+checked', html)

    html = get(operator, vm=vm.pk, point=point.pk, step="what")
    assert current_step(html) == "what"
    assert 'name="what" value="vm"' in html and 'name="what" value="disk"' in html
    assert '<option value="vdb">vdb (2.0\u00a0GiB)</option>' in html

    state = {"vm": vm.pk, "point": point.pk, "what": "disk", "disk": "vdb"}
    html = get(operator, **state, step="where")
    assert current_step(html) == "where"
    assert 'id="id_path"' in html and 'id="id_format"' in html and 'id="id_name"' not in html
    # No vSphere target: a disk goes to a file, and the datastore part is not offered.
    assert hidden(html) == {**{k: str(v) for k, v in state.items()}, "to": "file"}
    assert 'id="restore-to-datastore"' not in html

    state |= {"path": "/var/tmp/web-1-vdb.qcow2", "format": "qcow2"}
    html = get(operator, **state, step="summary")
    assert current_step(html) == "summary"
    assert "/var/tmp/web-1-vdb.qcow2" in html and 'id="restore-confirm"' in html
    assert 'method="post"' in html[html.index('<form id="restore-wizard"') :][:200]

    response = operator.post(URL, hidden(html))

    run = JobRun.objects.get()
    assert run.kind == RunKind.RESTORE and run.state == RunState.QUEUED
    assert run.repository == point.repository
    assert run.requested_by.username == "otto"
    assert run.options == {
        "what": "disk",
        "disk": "vdb",
        "to": "file",
        "path": "/var/tmp/web-1-vdb.qcow2",
        "format": "qcow2",
        "restore_point": point.pk,
    }
    assert response.status_code == 302
    from frontend.templatetags.console_tags import console_url

    assert response["Location"] == (console_url("run", run.pk) or "/restore/")
    assert AuditEvent.objects.filter(action="storage.restore_point.restore").count() == 1


def test_whole_vm_to_the_original_host_under_a_new_name(operator: Client, world: Any) -> None:
    vm, point = world["vm"], world["new"]
    state = {"vm": vm.pk, "point": point.pk, "what": "vm"}

    html = get(operator, **state, step="where")
    assert 'value="web-1-restored"' in html
    assert re.search(
        rf'<option value="{vm.connection_id}" selected>[^<]*\(the original host\)', html
    )

    state |= {
        "connection": vm.connection_id,
        "name": "web-1-restored",
        "path": "/var/lib/libvirt/images",
        "start": "on",
    }
    html = get(operator, **state, step="summary")
    assert current_step(html) == "summary"

    operator.post(URL, hidden(html))

    assert JobRun.objects.get().options == {
        "what": "vm",
        "path": "/var/lib/libvirt/images",
        "name": "web-1-restored",
        "connection": vm.connection_id,
        "start": True,
        "restore_point": point.pk,
    }


def test_a_link_with_vm_and_point_starts_at_what(operator: Client, world: Any) -> None:
    html = get(operator, vm=world["vm"].pk, point=world["old"].pk)
    assert current_step(html) == "what"

    only_point = get(operator, point=world["old"].pk)
    assert current_step(only_point) == "what"
    assert hidden(only_point)["vm"] == str(world["vm"].pk)


def test_back_keeps_the_choices(operator: Client, world: Any) -> None:
    state = {"vm": world["vm"].pk, "point": world["old"].pk, "what": "disk", "disk": "vdb"}
    html = get(operator, **state, step="where")

    back = re.search(r'<a class="[^"]*" href="([^"]+)" id="restore-back"', html)
    assert back
    previous = operator.get(URL + back.group(1).replace("&amp;", "&")).content.decode()
    assert current_step(previous) == "what"
    assert re.search(r'<option value="vdb" selected>', previous)


@pytest.mark.parametrize(
    ("extra", "step", "field_id", "message"),
    [
        ({"what": "disk", "disk": "vdb", "path": "relative/x.raw"}, "where", "id_path", "absolute"),
        ({"what": "disk", "disk": "vdb", "path": ""}, "where", "id_path", "required"),
        ({"what": "disk", "disk": "sdz", "path": "/x.raw"}, "what", "id_disk", "valid choice"),
        ({"what": "vm", "path": "/images", "name": ""}, "where", "id_name", "Required"),
        ({"what": "teleport", "path": "/x"}, "what", "id_what", "valid choice"),
    ],
)
def test_each_step_is_validated_on_the_server(
    operator: Client, world: Any, extra: dict[str, str], step: str, field_id: str, message: str
) -> None:
    state = {"vm": world["vm"].pk, "point": world["new"].pk, **extra}

    html = get(operator, **state, step="summary")
    assert current_step(html) == step
    assert message in error(html, field_id)

    response = operator.post(URL, state)
    assert response.status_code == 200 and current_step(response.content.decode()) == step
    assert not JobRun.objects.exists()


def test_a_name_taken_on_the_target_host_is_refused(operator: Client, world: Any) -> None:
    vm = world["vm"]
    state = {
        "vm": vm.pk,
        "point": world["new"].pk,
        "what": "vm",
        "connection": vm.connection_id,
        "name": "web-1",  # the original itself: restores never overwrite
        "path": "/var/lib/libvirt/images",
    }

    html = get(operator, **state, step="summary")

    assert current_step(html) == "where"
    assert "never" in error(html, "id_name") and "overwrite" in error(html, "id_name")


def test_corrupt_points_are_listed_but_cannot_be_chosen(operator: Client, world: Any) -> None:
    world["old"].state = RestorePointState.CORRUPT
    world["old"].verify_error = "chunk 3f… is missing"
    world["old"].save()

    html = get(operator, vm=world["vm"].pk, step="point")
    assert "Corrupt" in html and "is missing" in html
    assert re.search(rf'value="{world["old"].pk}" id="id_point_1"\s+disabled', html)

    forced = get(operator, vm=world["vm"].pk, point=world["old"].pk, step="what")
    assert current_step(forced) == "point"


def test_whole_vm_is_not_offered_for_a_vm_from_another_hypervisor(
    operator: Client, world: Any
) -> None:
    hyperv = VirtualMachineFactory(name="hv-1", connection=ConnectionFactory(kind="hyperv"))
    point = RestorePointFactory(vm=hyperv)
    RestorePointDisk.objects.create(restore_point=point, device_key="scsi0", capacity_bytes=GiB)

    html = get(operator, vm=hyperv.pk, point=point.pk, step="what")

    assert 'name="what" value="vm"' not in html
    assert "nothing restores VMs to Microsoft Hyper-V yet" in html


def test_a_kvm_vm_is_not_restored_to_vsphere(operator: Client, world: Any) -> None:
    vcenter = ConnectionFactory(name="vc-x", kind="vcenter")
    state = {
        "vm": world["vm"].pk,
        "point": world["new"].pk,
        "what": "vm",
        "connection": vcenter.pk,
        "name": "web-1-on-vsphere",
        "path": "/images",
    }

    html = get(operator, **state, step="where")
    assert f'<option value="{vcenter.pk}"' not in html, "only KVM hosts are offered"

    html = get(operator, **state, step="summary")
    assert current_step(html) == "where"
    assert "valid choice" in error(html, "id_connection")


# --- vSphere targets -----------------------------------------------------------------------------


@pytest.fixture
def vsphere(db: Any) -> dict[str, Any]:
    """A vCenter VM with one 10 GiB disk on ds-fast and a restore point; its vCenter has a roomy
    and a small datastore, a second vCenter one of its own."""
    vc = ConnectionFactory(name="vc-1", kind="vcenter")
    fast = InventoryObject.objects.create(
        connection=vc,
        kind="datastore",
        external_id="datastore-1",
        name="ds-fast",
        capacity_bytes=1024 * GiB,
        free_bytes=500 * GiB,
    )
    InventoryObject.objects.create(
        connection=vc,
        kind="datastore",
        external_id="datastore-2",
        name="ds-small",
        capacity_bytes=8 * GiB,
        free_bytes=GiB,
    )
    other = ConnectionFactory(name="vc-2", kind="vcenter")
    InventoryObject.objects.create(
        connection=other, kind="datastore", external_id="datastore-9", name="ds-other"
    )
    vm = VirtualMachineFactory(name="app-1", connection=vc)
    VirtualDisk.objects.create(vm=vm, device_key="2000", capacity_bytes=10 * GiB, datastore=fast)
    point = RestorePointFactory(vm=vm, logical_bytes=10 * GiB)
    RestorePointDisk.objects.create(restore_point=point, device_key="2000", capacity_bytes=10 * GiB)
    return {"vc": vc, "other": other, "vm": vm, "point": point}


def test_a_vsphere_vm_restores_as_a_new_vm_on_a_datastore(
    operator: Client, world: Any, vsphere: dict[str, Any]
) -> None:
    vm, vc = vsphere["vm"], vsphere["vc"]
    state = {"vm": vm.pk, "point": vsphere["point"].pk}

    html = get(operator, **state, step="what")
    assert 'name="what" value="vm"' in html and "One disk, to a file or a datastore" in html

    state["what"] = "vm"
    html = get(operator, **state, step="where")
    assert re.search(r'<fieldset id="restore-where" data-family="vsphere">', html)
    hosts = re.findall(r'<option value="(\d+)"[^>]*>([^<]*)</option>', html)
    assert hosts == [(str(vc.pk), "vc-1 (the original host)"), (str(vsphere["other"].pk), "vc-2")]
    assert world["vm"].connection.name not in html, "no KVM host for a vSphere VM"
    assert 'id="id_path"' not in html and 'value="app-1-restored"' in html
    assert "Power it on once created" in html
    # The VM's own datastore first; sizes as the last sync saw them.
    assert re.search(
        r'<option value="ds-fast" selected>ds-fast — 500.0\xa0GiB free of 1.0\xa0TiB', html
    )
    assert "ds-small — 1.0\xa0GiB free" in html and "ds-other" not in html
    assert 'hx-get="/restore/"' in html and 'hx-select="#restore-datastore-field"' in html

    state |= {"connection": vc.pk, "name": "app-1-restored", "datastore": "ds-fast", "start": "on"}
    html = get(operator, **state, step="summary")
    assert current_step(html) == "summary", error(html, "id_datastore")
    assert "ds-fast" in html and "Power on" in html

    operator.post(URL, hidden(html))

    assert JobRun.objects.get().options == {
        "what": "vm",
        "connection": vc.pk,
        "name": "app-1-restored",
        "datastore": "ds-fast",
        "start": True,
        "restore_point": vsphere["point"].pk,
    }


def test_changing_the_vcenter_lists_its_datastores(operator: Client, vsphere: Any) -> None:
    state = {"vm": vsphere["vm"].pk, "point": vsphere["point"].pk, "what": "vm"}

    html = get(operator, **state, connection=vsphere["other"].pk, step="where")

    field = html[html.index('id="restore-datastore-field"') :]
    field = field[: field.index("</select>")]
    assert re.findall(r'<option value="([^"]+)"', field) == ["ds-other"]


@pytest.mark.parametrize(
    ("extra", "field_id", "message"),
    [
        ({"datastore": "ds-small"}, "id_datastore", "1.0 GiB free"),
        ({"datastore": "ds-other"}, "id_datastore", "chosen connection"),
        ({"datastore": ""}, "id_datastore", "Required to restore a VM to vSphere"),
        ({"datastore": "ds-fast", "name": "app-1"}, "id_name", "never overwrite"),
    ],
)
def test_vsphere_targets_are_checked_next_to_their_fields(
    operator: Client, vsphere: Any, extra: dict[str, str], field_id: str, message: str
) -> None:
    state = {
        "vm": vsphere["vm"].pk,
        "point": vsphere["point"].pk,
        "what": "vm",
        "connection": vsphere["vc"].pk,
        "name": "app-1-copy",
        **extra,
    }

    html = get(operator, **state, step="summary")

    assert current_step(html) == "where"
    assert message in error(html, field_id)


def test_a_disk_to_a_datastore(operator: Client, vsphere: Any) -> None:
    vc = vsphere["vc"]
    state = {"vm": vsphere["vm"].pk, "point": vsphere["point"].pk, "what": "disk", "disk": "2000"}

    html = get(operator, **state, step="where")
    assert 'id="restore-to-file"' in html and 'id="restore-to-datastore"' in html
    assert re.search(r'name="to" value="file" id="id_to_0"\s+checked', html)
    assert 'value="app-1-restored/app-1-2000.vmdk"' in html
    file_formats = html[html.index('id="id_format"') :]
    assert re.findall(
        r'<option value="(\w+)"', file_formats[: file_formats.index("</select>")]
    ) == ["raw"], "disks of vSphere VMs are written raw"

    bad = get(
        operator,
        **state,
        to="datastore",
        connection=vc.pk,
        datastore="ds-fast",
        ds_path="x.img",
        step="summary",
    )
    assert current_step(bad) == "where" and "ends in .vmdk" in error(bad, "id_ds_path")

    state |= {"to": "datastore", "connection": vc.pk, "datastore": "ds-fast", "ds_path": "r/a.vmdk"}
    html = get(operator, **state, step="summary")
    assert current_step(html) == "summary"
    assert "[ds-fast] r/a.vmdk</code> on vc-1" in html

    operator.post(URL, hidden(html))

    assert JobRun.objects.get().options == {
        "what": "disk",
        "disk": "2000",
        "to": "datastore",
        "connection": vc.pk,
        "datastore": "ds-fast",
        "path": "r/a.vmdk",
        "restore_point": vsphere["point"].pk,
    }


def test_vsphere_targets_follow_the_users_role(
    client: Client, logged_in: Any, vsphere: Any
) -> None:
    """A role scoped to VMs offers no host to restore the whole VM to, nor any datastore."""
    logged_in("vm-owner", "operator", object_types=["inventory.virtualmachine"])
    state = {"vm": vsphere["vm"].pk, "point": vsphere["point"].pk}

    html = get(client, **state, step="what")
    assert 'name="what" value="vm"' not in html
    assert "your role names no vCenter or ESXi host to restore to" in html
    assert "One disk, to a file<" in html

    forced = get(
        client,
        **state,
        what="disk",
        disk="2000",
        to="datastore",
        connection=vsphere["vc"].pk,
        datastore="ds-fast",
        ds_path="r/a.vmdk",
        step="summary",
    )
    assert current_step(forced) == "where"
    assert "No vSphere datastore you may restore to" in error(forced, "id_to")
