"""Restores to vSphere through the API against vcsim: the request validated field by field,
start_restore queuing a run, the run executed here (as a proxy would) through the vSphere
connector, and the restored disks compared with what was backed up."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from inventory.models import Connection
from inventory.tasks import sync_connection
from jobs.choices import RunKind, RunResult
from jobs.models import JobRun
from jobs.restore import execute_restore
from tests.vmware.conftest import DISK_SIZE, Vcsim, sha256_of_file
from tests.vmware.world import connect, disk_keys, logs, point_of, protect, run

pytestmark = pytest.mark.django_db(transaction=True)

SOURCE = "api-restore-src"


@pytest.fixture
def backed_up(vcsim: Vcsim, admin_user: Any, tmp_path: Any) -> SimpleNamespace:
    """SOURCE (two 64 MiB disks with content) backed up once; the source then moves on."""
    try:
        vcsim.find_vm(SOURCE)
    except LookupError:
        vcsim.create_vm(SOURCE, disks=2)
    connection = connect(vcsim, admin_user)
    policy = protect(connection, [SOURCE], admin_user, tmp_path)
    expected = [vcsim.sha256_of_disk(SOURCE, i) for i in range(2)]
    job = run(policy, admin_user)
    assert job.result == RunResult.SUCCEEDED, (job.reason, logs(job))
    vcsim.write_disk(SOURCE, 0, b"after the backup" * 64)  # restores must not see this
    return SimpleNamespace(
        connection=connection,
        point=point_of(job, SOURCE),
        expected=expected,
        keys=disk_keys(vcsim, SOURCE),
        url=f"/api/storage/restore-points/{point_of(job, SOURCE).pk}/restore/",
    )


def _restore(api: Any, url: str, body: dict[str, Any]) -> JobRun:
    response = api.post(url, body, format="json")
    assert response.status_code == 202, response.data
    execute_restore(response.data["id"])
    return JobRun.objects.get(pk=response.data["id"])


def test_the_whole_vm_as_a_new_vm_on_a_datastore(vcsim, api, backed_up):
    body = {
        "what": "vm",
        "connection": backed_up.connection.pk,
        "name": "api-restored",
        "datastore": vcsim.datastore,
        "start": True,
    }

    restored = _restore(api, backed_up.url, body)

    assert restored.kind == RunKind.RESTORE
    assert restored.result == RunResult.SUCCEEDED, (restored.reason, logs(restored))
    assert restored.options == {**body, "restore_point": backed_up.point.pk}
    assert restored.bytes_done == restored.bytes_total == 2 * DISK_SIZE
    messages = logs(restored)
    assert any(m.startswith("Creating VM api-restored on vcsim: 2 disk(s)") for m in messages)
    files = [d.backing.fileName for d in vcsim.disks("api-restored")]
    assert files == [f"[{vcsim.datastore}] api-restored/api-restored_{i}.vmdk" for i in (0, 1)]
    for key, file in zip(backed_up.keys, files, strict=True):
        assert f"Disk {key} → {file}." in messages
    digests = [sha256_of_file(vcsim.local_path(f)) for f in files]
    assert digests == backed_up.expected
    copy, original = vcsim.find_vm("api-restored"), vcsim.find_vm(SOURCE)
    assert copy.runtime.powerState == "poweredOn"
    assert copy.config.instanceUuid != original.config.instanceUuid
    assert "api-restored" in restored.reason and "powered on" in restored.reason

    # Before a sync the inventory does not know the new VM: the connector itself refuses to
    # overwrite it, and the run fails saying so.
    again = _restore(api, backed_up.url, body)
    assert again.result == RunResult.FAILED
    assert "exists already" in again.reason
    assert [sha256_of_file(vcsim.local_path(f)) for f in files] == backed_up.expected

    # Once synced, the name is refused at the request, next to the field.
    sync_connection(backed_up.connection.pk)
    response = api.post(backed_up.url, body, format="json")
    assert response.status_code == 400
    assert "never overwrite" in str(response.data["name"])


def test_a_taken_name_is_refused_with_a_field_error(api, backed_up):
    response = api.post(
        backed_up.url,
        {
            "what": "vm",
            "connection": backed_up.connection.pk,
            "name": SOURCE,
            "datastore": "LocalDS_0",
        },
        format="json",
    )

    assert response.status_code == 400
    assert set(response.data) == {"name"}
    assert "exists on vcsim already" in str(response.data["name"])
    assert not JobRun.objects.filter(kind=RunKind.RESTORE).exists()


def test_one_disk_to_a_datastore_and_to_a_file(vcsim, api, backed_up, tmp_path):
    key = backed_up.keys[1]

    to_datastore = _restore(
        api,
        backed_up.url,
        {
            "what": "disk",
            "disk": key,
            "to": "datastore",
            "connection": backed_up.connection.pk,
            "datastore": vcsim.datastore,
            "path": "restored/api-disk1.vmdk",
        },
    )

    assert to_datastore.result == RunResult.SUCCEEDED, (to_datastore.reason, logs(to_datastore))
    where = f"[{vcsim.datastore}] restored/api-disk1.vmdk"
    assert where in to_datastore.reason
    assert sha256_of_file(vcsim.local_path(where)) == backed_up.expected[1]
    assert to_datastore.bytes_done == to_datastore.bytes_total == DISK_SIZE

    to_file = _restore(
        api,
        backed_up.url,
        {"what": "disk", "disk": backed_up.keys[0], "path": str(tmp_path / "disk0.raw")},
    )

    assert to_file.result == RunResult.SUCCEEDED, (to_file.reason, logs(to_file))
    assert to_file.options["to"] == "file" and to_file.options["format"] == "raw"
    assert sha256_of_file(tmp_path / "disk0.raw") == backed_up.expected[0]


def test_requests_that_could_only_fail_get_field_errors(api, backed_up, admin_user):
    kvm = Connection.objects.create(name="kvm-1", kind="kvm", address="qemu:///system", port=22)
    vm = {"what": "vm", "connection": backed_up.connection.pk, "name": "new-vm"}
    disk = {"what": "disk", "disk": backed_up.keys[0]}
    on_ds = {**disk, "to": "datastore", "connection": backed_up.connection.pk}
    cases = [
        (vm, {"datastore": ["Required to restore a VM to vSphere."]}),
        ({**vm, "datastore": "NoSuchDS"}, "has no datastore named 'NoSuchDS'"),
        ({**vm, "connection": kvm.pk, "path": "/srv/vms"}, "vCenter or ESXi host"),
        ({**vm, "connection": 99999, "datastore": "LocalDS_0"}, "No such connection"),
        ({**disk, "path": "/tmp/x.qcow2", "format": "qcow2"}, "written raw"),
        ({**on_ds, "datastore": "LocalDS_0", "path": "/abs/x.vmdk"}, "inside the datastore"),
        ({**on_ds, "datastore": "LocalDS_0", "path": "restored/x.img"}, "ends in .vmdk"),
        ({**on_ds, "datastore": "LocalDS_0", "path": "a/../x.vmdk"}, ".. parts"),
        ({**on_ds, "path": "x.vmdk"}, {"datastore": ["Required to restore to a datastore."]}),
        ({**on_ds, "connection": kvm.pk, "datastore": "LocalDS_0", "path": "x.vmdk"}, "vCenter"),
        ({**disk, "disk": "9999", "path": "/tmp/x.raw"}, "holds no such disk"),
    ]
    for body, expected in cases:
        response = api.post(backed_up.url, body, format="json")
        assert response.status_code == 400, (body, response.data)
        if isinstance(expected, dict):
            assert response.data == expected, body
        else:
            assert expected in str(response.data), (body, response.data)
    assert not JobRun.objects.filter(kind=RunKind.RESTORE).exists()
