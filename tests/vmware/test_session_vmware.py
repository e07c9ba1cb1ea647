"""vSphere sessions and inventory on vcsim: the certificate fingerprint shown on first contact and
pinned (a different certificate is refused before anything is sent), one session reused and
renewed after it expired (SOAP and file transfers alike), and inventory sync through the
PropertyCollector at a cost that does not grow with the number of VMs."""

from __future__ import annotations

import pytest

from backupconsole.errors import ActionRefused
from inventory import services as inventory_services
from inventory.models import InventoryObject, VirtualMachine
from inventory.tasks import sync_connection
from inventory.vmware import session as vsession
from inventory.vmware.discovery import discover
from inventory.vmware.files import DatastoreHTTP, folder_url
from inventory.vmware.session import CertificateMismatch, VSphereError, session_for
from tests.vmware.conftest import MiB, wait_task
from tests.vmware.world import connect

pytestmark = pytest.mark.django_db(transaction=True)
WRONG = ":".join(["AB"] * 32)


@pytest.fixture(autouse=True)
def fresh_sessions():
    vsession.forget_sessions()
    yield
    vsession.forget_sessions()


def _session_keys(vcsim) -> set[str]:
    return {s.key for s in vcsim.si.content.sessionManager.sessionList or []}


def test_first_contact_shows_the_fingerprint_and_only_the_pinned_certificate_is_trusted(
    vcsim, admin_user
):
    shown = inventory_services.fetch_fingerprint(
        kind="vcenter", address=vcsim.host, port=vcsim.port
    )
    assert shown.ok and shown.fingerprint == vcsim.thumbprint

    data = {
        "name": "pinned-wrong",
        "kind": "vcenter",
        "address": vcsim.host,
        "port": vcsim.port,
        "username": vcsim.user,
        "tls_fingerprint": WRONG,
    }
    with pytest.raises(ActionRefused, match="not the pinned one"):
        inventory_services.create_connection(
            data=data, secret=vcsim.password, acting_user=admin_user
        )
    connection = inventory_services.create_connection(
        data=data, secret=vcsim.password, acting_user=admin_user, test=False
    )
    sessions = _session_keys(vcsim)
    with pytest.raises(CertificateMismatch, match=vcsim.thumbprint):
        sync_connection(connection.pk)
    assert _session_keys(vcsim) == sessions  # refused before logging in: no password sent
    assert not VirtualMachine.objects.exists()

    # No pin, verification on: the simulator's self-signed certificate is not trusted.
    connection.tls_fingerprint = ""
    connection.save()
    with pytest.raises(VSphereError, match="does not trust"):
        sync_connection(connection.pk)
    # Pinning what first contact showed makes it work, with the right password only.
    connection.tls_fingerprint = shown.fingerprint
    connection.set_secret("not-the-password")
    connection.save()
    with pytest.raises(VSphereError, match="refused the user name or password") as refused:
        sync_connection(connection.pk)
    assert "not-the-password" not in str(refused.value)
    connection.set_secret(vcsim.password)
    connection.save()
    assert sync_connection(connection.pk)["vms_added"] > 0


def test_one_session_is_reused_and_logs_in_again_when_it_expired(vcsim, admin_user):
    connection = connect(vcsim, admin_user)
    session = session_for(connection)
    assert session.logins == 1
    sync_connection(connection.pk)
    assert session_for(connection) is session and session.logins == 1

    # vCenter forgets idle sessions; here another client terminates ours.
    key = session.content.sessionManager.currentSession.key
    vcsim.si.content.sessionManager.TerminateSession([key])
    assert key not in _session_keys(vcsim)
    result = sync_connection(connection.pk)
    assert result["vms_updated"] > 0 and session.logins == 2

    # File transfers carry the session cookie: an expired one is renewed the same way.
    vcsim.si.content.sessionManager.TerminateSession(
        [session.content.sessionManager.currentSession.key]
    )
    files = DatastoreHTTP(session)
    try:
        path = vcsim.disks("src-vm-1")[0].backing.fileName.split("] ")[1]
        data = files.read(
            folder_url(vcsim.datacenter, vcsim.datastore, path.replace(".vmdk", "-flat.vmdk")),
            0,
            4096,
        )
    finally:
        files.close()
    assert data == vcsim.read_disk("src-vm-1", 0, 4096) and session.logins == 3


def test_inventory_sync_places_objects_and_describes_vms_and_disks(vcsim, admin_user):
    from pyVmomi import vim

    fields = vcsim.si.content.customFieldsManager
    owner = fields.AddCustomFieldDef(name="owner", moType=vim.VirtualMachine)
    fields.SetField(entity=vcsim.find_vm("src-vm-2"), key=owner.key, value="alice")
    connection = connect(vcsim, admin_user)

    objects = {o.name: o for o in InventoryObject.objects.filter(connection=connection)}
    assert objects["DC0"].kind == "datacenter" and objects["DC0"].parent is None
    assert objects["DC0_C0"].kind == "cluster" and objects["DC0_C0"].parent == objects["DC0"]
    assert objects[vcsim.host_name].parent == objects["DC0_C0"]
    assert objects["DC0_H0"].kind == "host" and objects["DC0_H0"].parent == objects["DC0"]
    assert objects[vcsim.datastore].kind == "datastore"

    vm = VirtualMachine.objects.get(connection=connection, name="src-vm-2")
    source = vcsim.find_vm("src-vm-2")
    assert vm.external_id == source._moId and vm.instance_uuid == source.config.instanceUuid
    assert (vm.power_state, vm.cpus, vm.memory_mib) == ("on", 1, 256)
    assert (vm.datacenter, vm.cluster, vm.host) == (
        objects["DC0"],
        objects["DC0_C0"],
        objects[vcsim.host_name],
    )
    assert list(vm.tags.values_list("name", flat=True)) == ["owner:alice"]
    disks = list(vm.disks.order_by("label"))
    assert [d.capacity_bytes for d in disks] == [64 * MiB, 64 * MiB]
    assert [d.label.split(" (")[1] for d in disks] == ["SCSI 0:0)", "SCSI 0:1)"]
    assert [d.location for d in disks] == [d.backing.fileName for d in vcsim.disks("src-vm-2")]
    assert all(d.datastore == objects[vcsim.datastore] and d.mode == "persistent" for d in disks)

    # CBT state and snapshots present, as discovered.
    wait_task(vcsim.si, source.CreateSnapshot_Task(name="user-snap", memory=False, quiesce=False))
    found = {v.name: v for v in discover(session_for(connection)).vms}
    assert found["src-vm-2"].snapshots == ["user-snap"]
    assert found["src-vm-2"].change_tracking is False
    assert found["src-vm-2"].needs_consolidation is False


def test_inventory_costs_the_same_round_trips_for_more_vms(vcsim, admin_user, monkeypatch):
    connection = connect(vcsim, admin_user)
    session = session_for(connection)
    calls = []
    invoke = vsession._RenewingStub.InvokeMethod

    def counting(self, mo, info, args, outerStub=None):
        calls.append(info.name)
        return invoke(self, mo, info, args, outerStub)

    monkeypatch.setattr(vsession._RenewingStub, "InvokeMethod", counting)
    before = len(discover(session).vms)
    first = len(calls)
    for i in range(6):
        vcsim.create_vm(f"many-{i}", fill=False, size=MiB)
    calls.clear()
    assert len(discover(session).vms) == before + 6
    assert len(calls) == first  # one request per object type, not per VM
    assert calls.count("RetrievePropertiesEx") == 7  # datacenters … VMs: one page each
