"""The inventory and proxies pages: connections (add, edit, test, sync, delete; secrets never
shown back), the tree, the filterable VM table, the VM page and "Back up now", each with its
permission (viewer sees, may not act; no role sees nothing)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection as db_connection
from django.test import Client
from django.test.html import Element, parse_html
from django.test.utils import CaptureQueriesContext
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from backupconsole.celery import app as celery_app
from backupconsole.models import AuditEvent
from backupconsole.services import assign_role
from inventory import services
from inventory.adapters import DiscoveredDisk, DiscoveredObject, DiscoveredVM, InventorySnapshot
from inventory.models import Connection, Proxy, VirtualMachine
from inventory.probe import format_fingerprint
from inventory.sync import apply_inventory
from inventory.tasks import sync_connection
from jobs.choices import RunState, TaskKind, TaskState, Trigger
from jobs.models import JobRun, RunTask
from jobs.services import create_policy
from storage.models import RestorePointDisk
from tests.endpoints import closed_port, self_signed, ssh_like_server, tls_server
from tests.factories import (
    ConnectionFactory,
    RepositoryFactory,
    RestorePointFactory,
    VirtualMachineFactory,
)

pytestmark = pytest.mark.django_db

INVENTORY = "/inventory/"
NEW = "/inventory/connections/new/"
PROBE = "/inventory/connections/probe/"
SECRET = "Sup3r-Secret-Value!"
HX = {"HTTP_HX_REQUEST": "true"}


# --- helpers -------------------------------------------------------------------------------------


def find(html: str | Element, **attrs: str) -> list[Element]:
    """Elements whose attributes include ``attrs`` (``data_testid`` means ``data-testid``)."""
    root = parse_html(html) if isinstance(html, str) else html
    wanted = {name.replace("_", "-"): value for name, value in attrs.items()}
    found: list[Element] = []

    def walk(node: Any) -> None:
        if isinstance(node, Element):
            own = dict(node.attributes)
            if all(own.get(name) == value for name, value in wanted.items()):
                found.append(node)
            for child in node.children:
                walk(child)

    walk(root)
    return found


def one(html: str | Element, **attrs: str) -> Element:
    matches = find(html, **attrs)
    assert len(matches) == 1, f"{attrs}: {len(matches)} matches"
    return matches[0]


def text(node: Any) -> str:
    if isinstance(node, Element):
        return " ".join(" ".join(text(child) for child in node.children).split())
    return str(node)


def page(client: Client, url: str, **extra: Any) -> str:
    response = client.get(url, **extra)
    assert response.status_code == 200, response.status_code
    return response.content.decode()


@pytest.fixture
def login(new_user: Callable[..., Any]) -> Callable[..., Client]:
    """``login("olga", "operator")``: a client signed in as a new user with that role."""

    def make(username: str, role: str | None = None, **assignment: Any) -> Client:
        client = Client()
        client.force_login(new_user(username, role, **assignment))
        return client

    return make


@pytest.fixture
def admin(login: Callable[..., Client]) -> Client:
    return login("ada", "administrator")


def snapshot() -> InventorySnapshot:
    """A small vSphere-like estate: datacenter → (host folder) → cluster → host → VMs."""
    return InventorySnapshot(
        objects=[
            DiscoveredObject("dc-1", "datacenter", "Lab DC"),
            DiscoveredObject("hf-1", "folder", "host", parent="dc-1"),
            DiscoveredObject("cl-1", "cluster", "Gold cluster", parent="hf-1"),
            DiscoveredObject("host-1", "host", "esx-a.lab", parent="cl-1"),
            DiscoveredObject("host-2", "host", "esx-b.lab", parent="dc-1"),
            DiscoveredObject("vf-web", "folder", "web", parent="dc-1"),
        ],
        vms=[
            DiscoveredVM(
                "vm-1",
                "web-01",
                power_state="on",
                guest_os="Debian 12",
                datacenter="dc-1",
                cluster="cl-1",
                host="host-1",
                folder="vf-web",
                tags=["linux", "web"],
                disks=[
                    DiscoveredDisk("sda", 20 * 2**30, label="Hard disk 1"),
                    DiscoveredDisk(
                        "sdb", 5 * 2**30, label="Hard disk 2", mode="independent_persistent"
                    ),
                ],
            ),
            DiscoveredVM(
                "vm-2",
                "web-02",
                power_state="off",
                datacenter="dc-1",
                cluster="cl-1",
                host="host-1",
                folder="vf-web",
                tags=["web"],
                disks=[DiscoveredDisk("sda", 10 * 2**30)],
            ),
            DiscoveredVM(
                "vm-3",
                "db-01",
                power_state="on",
                datacenter="dc-1",
                host="host-2",
                tags=["linux"],
                disks=[DiscoveredDisk("sda", 40 * 2**30)],
            ),
        ],
    )


def point(
    vm: VirtualMachine,
    age: timedelta,
    *,
    state: str = "committed",
    verify_error: str = "",
    **disk: Any,
) -> Any:
    restore_point = RestorePointFactory(
        vm=vm,
        created_at=timezone.now() - age,
        state=state,
        verify_error=verify_error,
        logical_bytes=vm.disks.get(device_key="sda").capacity_bytes,
        stored_bytes=3 * 2**30,
    )
    RestorePointDisk.objects.create(
        restore_point=restore_point,
        device_key="sda",
        capacity_bytes=restore_point.logical_bytes,
        **{"change_token": "bc-token", **disk},
    )
    return restore_point


@pytest.fixture
def estate(db: Any) -> dict[str, Any]:
    """One synced connection with three VMs, two policies and restore points."""
    owner = get_user_model().objects.create_user("setup")
    connection = ConnectionFactory(name="vc-lab", kind="vcenter", address="vc.lab", port=443)
    connection.set_secret(SECRET)
    connection.save()
    apply_inventory(connection, snapshot(), acting_user=None)
    vms = {vm.name: vm for vm in VirtualMachine.objects.all()}
    repository = RepositoryFactory(name="repo-main")
    gold = create_policy(
        data={"name": "gold", "repository": repository},
        vms=[vms["web-01"]],
        excluded_vms=[],
        rules=[],
        schedules=[],
        acting_user=owner,
    )
    linux = create_policy(
        data={"name": "linux-by-tag", "repository": repository},
        vms=[],
        excluded_vms=[],
        rules=[{"kind": "tag", "value": "linux"}],
        schedules=[],
        acting_user=owner,
    )
    points = {
        "web-first": point(
            vms["web-01"], timedelta(days=2), state="verified", full_read_reason="First backup."
        ),
        "web-incr": point(vms["web-01"], timedelta(days=1)),
        "db-old": point(vms["db-01"], timedelta(days=3), full_read_reason="First backup."),
        "db-reset": point(
            vms["db-01"],
            timedelta(hours=1),
            full_read_reason="The dirty bitmap was lost when the VM stopped.",
        ),
        "db-corrupt": point(
            vms["db-01"], timedelta(minutes=30), state="corrupt", verify_error="chunk 1f missing"
        ),
    }
    return {"connection": connection, "vms": vms, "gold": gold, "linux": linux, "points": points}


@pytest.fixture
def broker_queue() -> Iterator[Any]:
    """The Celery queue the console worker consumes, emptied before and after the test."""
    with celery_app.connection_for_write() as conn:
        queue = conn.SimpleQueue("console")
        queue.clear()
        try:
            yield queue
        finally:
            queue.clear()
            queue.close()


# --- inventory page ------------------------------------------------------------------------------


def test_connection_list_shows_kind_endpoint_state_vm_count_and_actions(admin, estate):
    html = page(admin, INVENTORY)

    row = one(html, data_testid="connection-row")
    assert "vc-lab" in text(row) and "VMware vCenter" in text(row) and "vc.lab:443" in text(row)
    assert text(one(row, data_testid="vm-count")) == "3"
    assert one(row, data_testid="sync-state").attributes.count(("data-state", "synced")) == 1
    assert "Not tested" in text(row)
    for action in ("connection-test", "connection-sync", "connection-edit", "connection-delete"):
        assert find(row, data_testid=action), action
    assert find(html, id="connection-add")


def test_tree_nests_datacenter_cluster_host_and_vms_skipping_folders(admin, estate):
    html = page(admin, INVENTORY)

    tree = one(html, id="inventory-tree")
    datacenter = one(tree, data_kind="datacenter")
    cluster = one(datacenter, data_kind="cluster")
    host_a = one(cluster, data_kind="host")
    assert "esx-a.lab" in text(host_a)
    assert {text(vm) for vm in find(host_a, data_vm=str(estate["vms"]["web-01"].pk))} == {
        "web-01 (Powered on)"
    }
    assert find(host_a, data_vm=str(estate["vms"]["web-02"].pk))
    # The standalone host hangs from the datacenter; its VM under it, not under the cluster.
    standalone = [h for h in find(datacenter, data_kind="host") if "esx-b.lab" in text(h)]
    assert len(standalone) == 1
    assert find(standalone[0], data_vm=str(estate["vms"]["db-01"].pk))
    assert not find(cluster, data_vm=str(estate["vms"]["db-01"].pk))
    assert "host" not in [text(n) for n in find(tree, data_kind="folder")]
    # Collapsible and keyboard-usable: native <details>/<summary>.
    assert "<details open>" in html and "<summary" in html


def vm_names(html: str) -> list[str]:
    table = find(html, id="vm-table")
    if not table:
        return []
    return [dict(row.attributes)["data-name"] for row in find(table[0], data_testid="vm-row")]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["db-01", "web-01", "web-02"]),
        ("q=web", ["web-01", "web-02"]),
        ("tag=linux", ["db-01", "web-01"]),
        ("protected=true", ["db-01", "web-01"]),
        ("protected=false", ["web-02"]),
        ("power_state=off", ["web-02"]),
        ("q=WEB&power_state=on", ["web-01"]),
    ],
)
def test_vm_table_filters_like_the_api(admin, estate, api, query, expected):
    html = page(admin, f"{INVENTORY}?{query}")

    assert vm_names(html) == expected
    # The same FilterSet answers the API with the same rows.
    listed = api.get(f"/api/inventory/vms/?present=true&{query}").json()
    rows = listed["results"] if isinstance(listed, dict) else listed
    assert sorted(vm["name"] for vm in rows) == expected


def test_vm_table_filters_by_connection_host_and_folder(admin, estate):
    vm = estate["vms"]["db-01"]
    other = ConnectionFactory(name="kvm-2")
    VirtualMachineFactory(connection=other, name="lonely")

    assert vm_names(page(admin, f"{INVENTORY}?connection={other.pk}")) == ["lonely"]
    assert vm_names(page(admin, f"{INVENTORY}?host={vm.host_id}")) == ["db-01"]
    folder = estate["vms"]["web-01"].folder_id
    assert vm_names(page(admin, f"{INVENTORY}?folder={folder}")) == ["web-01", "web-02"]


def test_vm_rows_show_policies_last_point_and_tracking_health(admin, estate):
    html = page(admin, INVENTORY)
    rows = {dict(r.attributes)["data-name"]: r for r in find(html, data_testid="vm-row")}

    policies = one(rows["web-01"], data_testid="vm-policies")
    assert [text(a) for a in find(policies, name="a")] in ([], ["gold", "linux-by-tag"])
    assert "gold" in text(policies) and "linux-by-tag" in text(policies)
    assert "Unprotected" in text(one(rows["web-02"], data_testid="vm-policies"))
    assert "1 day ago" in text(one(rows["web-01"], data_testid="vm-last-point"))
    assert text(one(rows["web-02"], data_testid="vm-last-point")) == "none"
    states = {
        name: dict(one(row, data_testid="vm-tracking").attributes)["data-state"]
        for name, row in rows.items()
    }
    # web-01 read incrementally last; db-01's newest usable point (the corrupt one does not
    # count) was a full read after an earlier point: tracking was reset.
    assert states == {"web-01": "ok", "web-02": "none", "db-01": "full"}
    badge = one(rows["db-01"], data_testid="vm-tracking")
    assert "dirty bitmap was lost" in dict(badge.attributes)["title"]


def test_vms_gone_from_the_hypervisor_only_when_asked(admin, estate):
    VirtualMachine.objects.filter(name="web-02").update(present=False)

    assert vm_names(page(admin, INVENTORY)) == ["db-01", "web-01"]
    assert vm_names(page(admin, f"{INVENTORY}?present=false")) == ["web-02"]
    assert vm_names(page(admin, f"{INVENTORY}?present=")) == ["db-01", "web-01", "web-02"]


def test_pagination_and_htmx_partial(admin, db):
    connection = ConnectionFactory()
    for n in range(30):
        VirtualMachineFactory(connection=connection, name=f"vm-{n:02d}")

    first = page(admin, INVENTORY)
    second = page(admin, f"{INVENTORY}?page=2", HTTP_HX_TARGET="vm-table-region", **HX)

    assert len(vm_names(first)) == 25 and vm_names(first)[0] == "vm-00"
    assert vm_names(second) == [f"vm-{n}" for n in range(25, 30)]
    assert second.lstrip().startswith('<div id="vm-table-region"'), "only the fragment"
    assert "<html" not in second and "Page 2 of 2" in second
    assert 'hx-push-url="true"' in first


def test_empty_states_tell_what_to_do(admin, login, db):
    html = page(admin, INVENTORY)
    assert "No connections yet" in text(one(html, id="connections-empty"))
    assert find(html, href=NEW)
    assert "Add a connection and sync it" in text(one(html, id="vm-table-empty"))
    assert "sync a connection" in text(one(html, id="inventory-tree"))

    viewer_html = page(login("vic", "viewer"), INVENTORY)
    assert "administrator adds" in text(one(viewer_html, id="connections-empty"))
    assert not find(viewer_html, href=NEW)

    ConnectionFactory()
    filtered = page(admin, f"{INVENTORY}?q=nothing-like-this")
    assert "No virtual machine matches these filters." in filtered


def test_viewer_sees_everything_but_no_actions(login, estate):
    viewer = login("vic", "viewer")
    html = page(viewer, INVENTORY)

    assert len(find(html, data_testid="connection-row")) == 1
    assert len(vm_names(html)) == 3
    for action in ("connection-test", "connection-sync", "connection-edit", "connection-delete"):
        assert not find(html, data_testid=action)
    assert not find(html, id="connection-add")

    connection_page = page(viewer, f"/inventory/connections/{estate['connection'].pk}/")
    assert not find(connection_page, id="connection-form")
    assert not find(connection_page, id="connection-sync")
    assert find(connection_page, id="connection-status")


def test_viewer_gets_403_on_every_action(login, estate):
    viewer = login("vic", "viewer")
    pk = estate["connection"].pk
    vm = estate["vms"]["web-01"]

    assert viewer.get(NEW).status_code == 403
    assert viewer.post(NEW, {"name": "x", "kind": "kvm", "address": "h"}).status_code == 403
    assert viewer.post(PROBE, {"kind": "kvm", "address": "h"}).status_code == 403
    for action in ("test", "sync", "delete"):
        assert viewer.post(f"/inventory/connections/{pk}/{action}/").status_code == 403, action
    assert viewer.post(f"/inventory/connections/{pk}/", {"name": "x"}).status_code == 403
    assert viewer.get(f"/inventory/connections/{pk}/delete/").status_code == 403
    assert viewer.post(f"/inventory/vms/{vm.pk}/backup/").status_code == 403
    assert Connection.objects.filter(pk=pk, name="vc-lab").exists()
    assert not JobRun.objects.exists()
    assert not AuditEvent.objects.filter(action=services.SYNC_REQUESTED).exists()


def test_no_role_sees_no_rows_and_gets_404(login, estate):
    nobody = login("nobody")
    html = page(nobody, INVENTORY)

    assert find(html, id="inventory-no-role")
    assert not find(html, data_testid="connection-row") and not vm_names(html)
    pk, vm = estate["connection"].pk, estate["vms"]["web-01"]
    assert nobody.get(f"/inventory/connections/{pk}/").status_code == 404
    assert nobody.get(f"/inventory/connections/{pk}/status/").status_code == 404
    assert nobody.post(f"/inventory/connections/{pk}/sync/").status_code == 404
    assert nobody.get(f"/inventory/vms/{vm.pk}/").status_code == 404
    assert nobody.post(f"/inventory/vms/{vm.pk}/backup/").status_code == 404
    assert Client().get(INVENTORY).status_code == 302, "anonymous users sign in first"


def test_a_scoped_role_sees_only_its_vms(login, estate):
    owner = login(
        "web-owner",
        "viewer",
        object_types=["inventory.virtualmachine"],
        constraints={"name__startswith": "web-"},
    )
    html = page(owner, INVENTORY)

    assert vm_names(html) == ["web-01", "web-02"]
    assert not find(html, data_testid="connection-row")
    assert owner.get(f"/inventory/vms/{estate['vms']['db-01'].pk}/").status_code == 404
    assert owner.get(f"/inventory/vms/{estate['vms']['web-01'].pk}/").status_code == 200


# --- connection form -----------------------------------------------------------------------------


def test_kvm_connection_is_added_after_its_endpoint_answered(admin):
    with ssh_like_server() as port:
        response = admin.post(
            NEW, {"name": "kvm-01", "kind": "kvm", "address": "127.0.0.1", "port": port}
        )

    connection = Connection.objects.get(name="kvm-01")
    assert (
        response.status_code == 302 and response.url == f"/inventory/connections/{connection.pk}/"
    )
    assert connection.last_test_ok is True and "SSH-2.0" in connection.last_test_message
    event = AuditEvent.objects.get(action="inventory.connection.create")
    assert event.user.username == "ada"
    html = page(admin, response.url)
    assert find(html, id="connection-sync") and find(html, id="connection-form")


def test_unreachable_endpoint_is_an_error_next_to_the_address(admin):
    port = closed_port()
    response = admin.post(
        NEW, {"name": "kvm-01", "kind": "kvm", "address": "127.0.0.1", "port": port}
    )

    html = response.content.decode()
    assert response.status_code == 200 and not Connection.objects.exists()
    error = one(html, id="id_address_error")
    assert "Cannot reach 127.0.0.1" in text(error)
    address = one(html, id="id_address")
    assert dict(address.attributes)["aria-describedby"].split() == [
        "id_address_helptext",
        "id_address_error",
    ]
    assert "is-invalid" in dict(address.attributes)["class"]

    saved = admin.post(
        NEW,
        {"name": "kvm-01", "kind": "kvm", "address": "127.0.0.1", "port": port, "skip_test": "on"},
    )
    assert saved.status_code == 302 and Connection.objects.get().last_test_ok is None


def test_kind_specific_fields_and_required_errors(admin):
    kvm = page(admin, NEW)
    assert find(kvm, id="id_address") and not find(kvm, id="id_password")
    assert "libvirt URI, socket or host" in kvm and not find(kvm, id="connection-certificate")

    # Changing the kind re-renders the fields through HTMX, keeping what was typed.
    switched = page(
        admin,
        f"{NEW}?kind=vcenter&name=vc-01&address=vc.lab",
        HTTP_HX_TARGET="connection-fields",
        **HX,
    )
    assert switched.lstrip().startswith('<div id="connection-fields" data-kind="vcenter"')
    assert dict(one(switched, id="id_name").attributes)["value"] == "vc-01"
    assert find(switched, id="id_password") and find(switched, id="connection-certificate")
    assert "vCenter Server host" in switched

    response = admin.post(NEW, {"name": "vc-01", "kind": "vcenter", "address": "vc.lab"})
    html = response.content.decode()
    assert "This field is required." in text(one(html, id="id_username_error"))
    assert "This field is required." in text(one(html, id="id_password_error"))
    assert not Connection.objects.exists()

    bad = admin.post(
        NEW,
        {
            "name": "vc-01",
            "kind": "vcenter",
            "address": "vc.lab",
            "username": "u",
            "password": SECRET,
            "tls_fingerprint": "AB:CD",
        },
    ).content.decode()
    assert "32 bytes in hexadecimal" in text(one(bad, id="id_tls_fingerprint_error"))
    assert SECRET not in bad, "a password typed is not rendered back, even with errors"


def test_certificate_pinning_flow_for_a_tls_endpoint(admin, tmp_path):
    cert, key, der = self_signed(tmp_path)
    fingerprint = format_fingerprint(der)
    with tls_server(cert, key) as port:
        body = {
            "name": "esxi-01",
            "kind": "esxi",
            "address": "127.0.0.1",
            "port": port,
            "username": "root",
            "password": SECRET,
            "verify_tls": "on",
        }
        # First contact: the probe shows the certificate and offers to trust it.
        probed = admin.post(PROBE, body, **HX).content.decode()
        assert dict(one(probed, data_testid="probe-result").attributes)["data-ok"] == "false"
        assert text(one(probed, data_testid="probe-fingerprint")) == fingerprint
        assert (
            dict(one(probed, id="connection-trust").attributes)["data-fingerprint"] == fingerprint
        )

        refused = admin.post(NEW, body).content.decode()
        assert fingerprint in text(one(refused, id="id_address_error"))
        assert (
            dict(one(refused, id="connection-trust").attributes)["data-fingerprint"] == fingerprint
        )
        assert not Connection.objects.exists()

        saved = admin.post(NEW, {**body, "tls_fingerprint": fingerprint.lower()})
        assert saved.status_code == 302
        probed_again = admin.post(PROBE, {**body, "tls_fingerprint": fingerprint}, **HX)

    connection = Connection.objects.get()
    assert connection.tls_fingerprint == fingerprint and connection.get_secret() == SECRET
    assert "pinned certificate" in connection.last_test_message
    html = probed_again.content.decode()
    assert dict(one(html, data_testid="probe-result").attributes)["data-ok"] == "true"
    assert not find(html, id="connection-trust"), "already pinned: nothing to trust"


def test_probe_reports_invalid_fields_instead_of_probing(admin):
    html = admin.post(PROBE, {"kind": "esxi", "address": "", "tls_fingerprint": "zz"}, **HX)
    body = html.content.decode()
    result = one(body, data_testid="probe-result")
    assert dict(result.attributes)["data-ok"] == "false"
    assert "ESXi host: This field is required." in text(result)
    assert "32 bytes" in text(result)


def test_secrets_are_write_only(admin, estate):
    connection = estate["connection"]
    url = f"/inventory/connections/{connection.pk}/"
    pages = [page(admin, INVENTORY), page(admin, url)]

    # Edit without a password keeps the stored one; a failed edit does not echo a new one.
    kept = admin.post(
        url,
        {
            "name": "vc-lab",
            "kind": "vcenter",
            "address": "vc.lab",
            "port": "443",
            "username": "administrator@vsphere.local",
            "verify_tls": "on",
            "skip_test": "on",
        },
    )
    assert kept.status_code == 302
    connection.refresh_from_db()
    assert connection.get_secret() == SECRET
    assert connection.username == "administrator@vsphere.local"
    failed = admin.post(url, {"name": "", "kind": "vcenter", "password": "N3w-Secret!"})
    pages += [failed.content.decode(), page(admin, url)]

    for html in pages:
        assert SECRET not in html and "N3w-Secret!" not in html
        assert connection.secret not in html
    password = one(pages[1], id="id_password")
    assert "value" not in dict(password.attributes)
    assert "Stored. Leave empty to keep it." in pages[1]

    admin.post(
        url,
        {
            "name": "vc-lab",
            "kind": "vcenter",
            "address": "vc.lab",
            "username": "administrator@vsphere.local",
            "password": "N3w-Secret!",
            "skip_test": "on",
        },
    )
    connection.refresh_from_db()
    assert connection.get_secret() == "N3w-Secret!"
    event = AuditEvent.objects.filter(action="inventory.connection.update").latest("time")
    assert "N3w-Secret!" not in str(event.after) and SECRET not in str(event.before)


# --- test, sync, delete --------------------------------------------------------------------------


def test_test_action_updates_the_row_inline(admin, db):
    connection = ConnectionFactory(name="kvm-01", address="127.0.0.1", port=closed_port())

    response = admin.post(f"/inventory/connections/{connection.pk}/test/", {"as": "row"}, **HX)

    html = response.content.decode()
    assert html.lstrip().startswith(f'<tr id="connection-row-{connection.pk}"')
    assert text(one(html, data_testid="test-state")) == "Failed"
    assert "Cannot reach 127.0.0.1" in text(one(html, data_testid="test-message"))
    connection.refresh_from_db()
    assert connection.last_test_ok is False
    assert AuditEvent.objects.filter(action="inventory.connection.test").count() == 1

    with ssh_like_server() as port:
        Connection.objects.filter(pk=connection.pk).update(port=port)
        plain = admin.post(f"/inventory/connections/{connection.pk}/test/")
    assert plain.status_code == 302 and plain.url == f"/inventory/connections/{connection.pk}/"
    card = page(admin, plain.url)
    assert text(one(one(card, id="connection-status"), data_testid="test-state")) == "OK"


def sync_state(html: str) -> str:
    return dict(one(html, data_testid="sync-state").attributes)["data-state"]


def test_sync_is_queued_polled_and_shows_its_outcome(
    admin, db, broker_queue, django_capture_on_commit_callbacks
):
    connection = ConnectionFactory(name="kvm-01", address="/nonexistent/libvirt-sock")
    status_url = f"/inventory/connections/{connection.pk}/status/?as=row"

    with django_capture_on_commit_callbacks(execute=True):
        response = admin.post(f"/inventory/connections/{connection.pk}/sync/", {"as": "row"}, **HX)

    html = response.content.decode()
    row = one(html, id=f"connection-row-{connection.pk}")
    assert sync_state(html) == "queued"
    assert dict(row.attributes)["hx-trigger"] == "every 2s", "polls while the sync is queued"
    assert dict(row.attributes)["hx-get"] == status_url
    message = broker_queue.get(timeout=5)
    assert message.headers["task"] == "inventory.tasks.sync_connection"
    assert message.payload[0] == [connection.pk]
    message.ack()
    assert sync_state(page(admin, status_url)) == "queued"

    # What the worker does with that message: here the endpoint does not exist, so it fails.
    sync_connection.apply(args=[connection.pk])
    failed = page(admin, status_url)
    assert sync_state(failed) == "failed" and text(one(failed, data_testid="sync-message"))
    assert "hx-trigger" not in dict(one(failed, id=f"connection-row-{connection.pk}").attributes)

    # A sync that applies an inventory ends the request: synced, with the VMs counted.
    services.request_sync(connection, acting_user=None)
    assert sync_state(page(admin, status_url)) == "queued"
    apply_inventory(connection, snapshot(), acting_user=None)
    synced = page(admin, status_url)
    assert sync_state(synced) == "synced"
    assert text(one(synced, data_testid="vm-count")) == "3"


def test_a_sync_nobody_runs_is_reported_and_no_longer_polled(admin, db):
    connection = ConnectionFactory(name="kvm-01")
    services.request_sync(connection, acting_user=None)
    AuditEvent.objects.filter(action=services.SYNC_REQUESTED).update(
        time=timezone.now() - timedelta(minutes=11)
    )

    html = page(admin, f"/inventory/connections/{connection.pk}/")

    card = one(html, id="connection-status")
    assert dict(card.attributes)["data-sync-state"] == "stuck"
    assert "hx-trigger" not in dict(card.attributes)
    assert "check that the console worker is running" in text(card)


def test_delete_asks_first_and_refuses_while_restore_points_exist(admin, estate):
    connection = estate["connection"]
    confirm = page(admin, f"/inventory/connections/{connection.pk}/delete/")
    assert "Delete the connection vc-lab?" in text(one(confirm, id="delete-title"))
    assert Connection.objects.filter(pk=connection.pk).exists(), "a GET deletes nothing"

    refused = admin.post(f"/inventory/connections/{connection.pk}/delete/", follow=True)
    assert "have restore points" in refused.content.decode()
    assert Connection.objects.filter(pk=connection.pk).exists()

    spare = ConnectionFactory(name="spare")
    deleted = admin.post(f"/inventory/connections/{spare.pk}/delete/")
    assert deleted.status_code == 302 and deleted.url == INVENTORY
    assert not Connection.objects.filter(pk=spare.pk).exists()
    assert AuditEvent.objects.filter(action="inventory.connection.delete").count() == 1


# --- VM page -------------------------------------------------------------------------------------


def test_vm_page_shows_facts_disks_tracking_and_policies(admin, estate):
    vm = estate["vms"]["web-01"]
    html = page(admin, f"/inventory/vms/{vm.pk}/")

    facts = text(one(html, id="vm-facts"))
    for fact in ("vc-lab", "Lab DC", "Gold cluster", "esx-a.lab", "web", "Powered on", "Debian 12"):
        assert fact in facts, fact
    assert "linux" in facts and "web" in facts
    disks = {dict(d.attributes)["data-disk"]: d for d in find(html, data_testid="vm-disk")}
    assert "20.0 GiB" in text(disks["sda"])
    excluded = one(disks["sdb"], data_testid="disk-excluded")
    assert "Independent disks are not included in VM snapshots." in text(excluded)
    tracking = {
        k: dict(one(d, data_testid="disk-tracking").attributes)["data-state"]
        for k, d in disks.items()
    }
    assert tracking == {"sda": "ok", "sdb": "excluded"}
    # Why the disk was last read in full, and when.
    assert "First backup." in text(one(disks["sda"], data_testid="disk-full-read"))
    policies = text(one(html, id="vm-policies"))
    assert "gold" in policies and "linux-by-tag" in policies


def test_vm_page_reset_tracking_shows_the_reason(admin, estate):
    vm = estate["vms"]["db-01"]
    html = page(admin, f"/inventory/vms/{vm.pk}/")

    sda = one(html, data_testid="vm-disk")
    assert dict(one(sda, data_testid="disk-tracking").attributes)["data-state"] == "full"
    assert "dirty bitmap was lost" in text(sda)


def test_restore_points_timeline_newest_first_in_the_users_time_zone(admin, estate):
    vm = estate["vms"]["db-01"]
    points = estate["points"]
    admin.cookies["console_tz"] = "Asia/Tokyo"

    response = admin.get(f"/inventory/vms/{vm.pk}/")
    html = response.content.decode()

    items = find(one(html, id="vm-restore-points"), data_testid="restore-point")
    assert [int(dict(i.attributes)["data-point"]) for i in items] == [
        points["db-corrupt"].pk,
        points["db-reset"].pk,
        points["db-old"].pk,
    ]
    tokyo = timezone.localtime(points["db-reset"].created_at, timezone.get_fixed_timezone(540))
    assert tokyo.strftime("%Y-%m-%d %H:%M JST") in text(items[1])
    states = [text(one(i, data_testid="point-state")) for i in items]
    assert states == ["Corrupt", "Committed", "Committed"]
    kinds = [text(one(i, data_testid="point-kind")) for i in items]
    assert kinds == ["Incremental", "Full", "Full"]
    assert "40.0 GiB of disks" in text(items[1]) and points["db-reset"].repository.name in text(
        items[1]
    )
    # An administrator may restore every point but the corrupt one.
    flags = {p.pk: p.may_restore for p in response.context["points"]}
    assert flags == {
        points["db-corrupt"].pk: False,
        points["db-reset"].pk: True,
        points["db-old"].pk: True,
    }
    links = find(html, data_testid="point-restore")
    assert [dict(a.attributes)["href"] for a in links] == [
        f"/restore/?vm={vm.pk}&point={points['db-reset'].pk}",
        f"/restore/?vm={vm.pk}&point={points['db-old'].pk}",
    ]


def test_a_vm_owner_may_restore_their_vms_points_from_its_page(login, estate):
    owner = login(
        "owen",
        "operator",
        object_types=["inventory.virtualmachine"],
        constraints={"name": "db-01"},
    )
    vm, points = estate["vms"]["db-01"], estate["points"]

    response = owner.get(f"/inventory/vms/{vm.pk}/")

    flags = {p.pk: p.may_restore for p in response.context["points"]}
    assert flags == {
        points["db-corrupt"].pk: False,
        points["db-reset"].pk: True,
        points["db-old"].pk: True,
    }
    assert len(find(response.content.decode(), data_testid="point-restore")) == 2


def test_viewer_may_not_restore_or_back_up(login, estate):
    viewer = login("vic", "viewer")
    vm = estate["vms"]["db-01"]

    response = viewer.get(f"/inventory/vms/{vm.pk}/")

    html = response.content.decode()
    assert find(html, id="vm-restore-points")
    assert not any(p.may_restore for p in response.context["points"])
    assert not find(html, data_testid="point-restore")
    assert not find(html, id="vm-backup-now")


def test_back_up_now_starts_a_run_for_this_vm(login, estate, django_capture_on_commit_callbacks):
    operator = login("olga", "operator")
    vm = estate["vms"]["web-01"]
    html = page(operator, f"/inventory/vms/{vm.pk}/")
    assert find(html, id="vm-backup-now")
    select = one(html, id="vm-backup-policy")
    assert [text(o) for o in select.children if isinstance(o, Element)] == ["gold", "linux-by-tag"]

    with django_capture_on_commit_callbacks(execute=False) as enqueued:
        response = operator.post(f"/inventory/vms/{vm.pk}/backup/", {"policy": estate["linux"].pk})

    run = JobRun.objects.get()
    assert run.policy == estate["linux"] and run.options == {"vms": [vm.pk]}
    assert run.trigger == Trigger.MANUAL and run.requested_by.username == "olga"
    assert len(enqueued) == 1, "enqueued once the run row is committed"
    try:
        expected = reverse("frontend:run", args=[run.pk])
    except NoReverseMatch:
        expected = f"/inventory/vms/{vm.pk}/"
    assert response.status_code == 302 and response.url == expected

    again = operator.post(f"/inventory/vms/{vm.pk}/backup/", {"policy": estate["linux"].pk})
    assert again.status_code == 302 and JobRun.objects.count() == 1, "one run per policy"
    assert "already running" in page(operator, f"/inventory/vms/{vm.pk}/")


def test_back_up_now_needs_a_policy(login, estate):
    operator = login("olga", "operator")
    vm = estate["vms"]["web-02"]  # unprotected
    html = page(operator, f"/inventory/vms/{vm.pk}/")

    button = one(html, id="vm-backup-now")
    assert "disabled" in dict(button.attributes)
    assert "Add this VM to a policy first" in text(one(html, id="vm-backup-why"))
    response = operator.post(f"/inventory/vms/{vm.pk}/backup/", follow=True)
    assert "No policy you may run protects this VM" in response.content.decode()
    assert not JobRun.objects.exists()
    forged = operator.post(f"/inventory/vms/{vm.pk}/backup/", {"policy": estate["gold"].pk})
    assert forged.status_code == 302 and not JobRun.objects.exists()


# --- proxies -------------------------------------------------------------------------------------


def test_proxies_status_heartbeat_and_slots(admin, estate):
    now = timezone.now()
    live = Proxy.objects.create(
        name="proxy-a",
        queue="proxy-a",
        task_slots=4,
        hostname="bk-01",
        version="0.3.0",
        last_heartbeat=now,
    )
    live.connections.set([estate["connection"]])
    Proxy.objects.create(name="proxy-b", queue="proxy-b", last_heartbeat=now - timedelta(hours=1))
    Proxy.objects.create(name="proxy-c", queue="proxy-c", enabled=False, last_heartbeat=now)
    Proxy.objects.create(name="proxy-d", queue="proxy-d")
    run = JobRun.objects.create(trigger=Trigger.MANUAL, proxy=live, state=RunState.WORKING)
    vms = list(estate["vms"].values())
    for vm, state in zip(
        vms, (TaskState.RUNNING, TaskState.RUNNING, TaskState.PENDING), strict=True
    ):
        RunTask.objects.create(
            run=run, kind=TaskKind.VM, name=vm.name, vm=vm, proxy=live, state=state
        )
    RunTask.objects.create(
        run=run, kind=TaskKind.DISK, name="sda", proxy=live, state=TaskState.RUNNING
    )

    html = page(admin, "/proxies/")

    rows = {dict(r.attributes)["data-proxy"]: r for r in find(html, data_testid="proxy-row")}
    states = {
        name: dict(one(row, data_testid="proxy-status").attributes)["data-state"]
        for name, row in rows.items()
    }
    assert states == {
        "proxy-a": "live",
        "proxy-b": "lost",
        "proxy-c": "disabled",
        "proxy-d": "never",
    }
    assert text(one(rows["proxy-a"], data_testid="proxy-slots")).startswith("2 / 4")
    assert "1 run active" in text(rows["proxy-a"])
    assert "bk-01" in text(rows["proxy-a"]) and "v0.3.0" in text(rows["proxy-a"])
    assert "vc-lab" in text(rows["proxy-a"]) and "every connection" in text(rows["proxy-b"])
    assert "1 hour ago" in text(rows["proxy-b"])
    assert text(one(html, id="proxy-summary")) == "1 of 4 live"
    region = one(html, id="proxy-table-region")
    assert dict(region.attributes)["hx-trigger"] == "every 15s"


def test_proxies_empty_state_and_permissions(admin, login, db):
    html = page(admin, "/proxies/")
    empty = text(one(html, id="proxies-empty"))
    assert "celery -A backupconsole worker -Q proxy-a" in empty

    Proxy.objects.create(name="proxy-a", queue="proxy-a")
    assert find(page(login("vic", "viewer"), "/proxies/"), data_testid="proxy-row")
    nobody = page(login("nobody"), "/proxies/")
    assert not find(nobody, data_testid="proxy-row")


# --- query counts --------------------------------------------------------------------------------


def queries(client: Client, url: str) -> int:
    with CaptureQueriesContext(db_connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured)


def grow(estate: dict[str, Any], n: int) -> None:
    """More of everything the list pages show: connections, VMs with tags, policies and points."""
    for i in range(n):
        connection = ConnectionFactory(name=f"more-{n}-{i}")
        vm = VirtualMachineFactory(connection=connection, name=f"more-{n}-{i}", tags=["linux"])
        vm.disks.create(device_key="sda", capacity_bytes=2**30)
        estate["gold"].members.add(vm)
        point(vm, timedelta(hours=i + 1))
        Proxy.objects.create(name=f"p-{n}-{i}", queue=f"p-{n}-{i}", last_heartbeat=timezone.now())


def test_list_pages_do_not_grow_queries_with_rows(login, estate):
    operator = login("olga", "operator")
    Proxy.objects.create(name="p", queue="p", last_heartbeat=timezone.now())
    urls = (INVENTORY, "/proxies/", f"/inventory/vms/{estate['vms']['db-01'].pk}/")
    before = [queries(operator, url) for url in urls]
    grow(estate, 6)
    for _ in range(3):
        point(estate["vms"]["db-01"], timedelta(minutes=5))
    after = [queries(operator, url) for url in urls]

    assert after == before


def test_role_assignment_changes_are_seen(new_user, estate):
    """A user granted a role later sees the rows (the page asks restrict on each request)."""
    user = new_user("late")
    client = Client()
    client.force_login(user)
    assert not vm_names(page(client, INVENTORY))
    assign_role(user=user, role="viewer", acting_user=None)
    assert len(vm_names(page(client, INVENTORY))) == 3
