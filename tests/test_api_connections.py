import time

import pytest

from backupconsole.models import AuditEvent
from inventory.models import Connection
from inventory.probe import format_fingerprint
from inventory.services import SYNC_FAILED, SYNC_REQUESTED
from tests.endpoints import closed_port, self_signed, silent_server, ssh_like_server, tls_server
from tests.kvm.conftest import kvm_domain, libvirt_conn, libvirt_env  # noqa: F401 - fixtures

URL = "/api/inventory/connections/"


def _body(**overrides):
    return {
        "name": "esxi-01",
        "kind": "esxi",
        "address": "127.0.0.1",
        "username": "root",
        "secret": "Sup3r-secret!",
        **overrides,
    }


@pytest.fixture
def certificate(tmp_path):
    return self_signed(tmp_path)


def test_pinned_certificate_is_accepted_and_the_secret_never_comes_back(api, certificate):
    cert, key, der = certificate
    with tls_server(cert, key) as port:
        response = api.post(
            URL, _body(port=port, tls_fingerprint=format_fingerprint(der).lower()), format="json"
        )
    assert response.status_code == 201, response.data
    assert "secret" not in response.data and response.data["has_secret"] is True
    assert response.data["last_test_ok"] is True
    assert response.data["tls_fingerprint"] == format_fingerprint(der)
    conn = Connection.objects.get()
    assert conn.get_secret() == "Sup3r-secret!"
    listed = api.get(URL).content.decode()
    assert "Sup3r-secret!" not in listed and conn.secret not in listed
    event = AuditEvent.objects.get(action="inventory.connection.create")
    assert event.user.username == "alice"
    assert "Sup3r-secret!" not in str(event.after) and conn.secret not in str(event.after)
    assert event.after["secret_set"] is True


def test_untrusted_certificate_is_refused_with_its_fingerprint(api, certificate):
    cert, key, der = certificate
    with tls_server(cert, key) as port:
        response = api.post(URL, _body(port=port), format="json")
    assert response.status_code == 400
    assert format_fingerprint(der) in response.data["address"][0]
    assert "pin" in response.data["address"][0]
    assert not Connection.objects.exists()


def test_a_different_certificate_than_the_pinned_one_is_refused(api, certificate, tmp_path):
    cert, key, _ = certificate
    _, _, other = self_signed(tmp_path, "other.test")
    with tls_server(cert, key) as port:
        response = api.post(
            URL, _body(port=port, tls_fingerprint=format_fingerprint(other)), format="json"
        )
    assert response.status_code == 400
    assert "not the pinned one" in response.data["address"][0]
    assert not Connection.objects.exists()


def test_unreachable_address_fails_clearly_and_saves_nothing(api):
    response = api.post(URL, _body(port=closed_port()), format="json")
    assert response.status_code == 400
    assert "Cannot reach 127.0.0.1" in response.data["address"][0]
    assert not Connection.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="inventory.connection").exists()


def test_a_silent_endpoint_fails_within_the_bounded_time(api, settings):
    settings.CONNECTION_TEST_TIMEOUT_SECONDS = 2
    with silent_server() as port:
        started = time.monotonic()
        response = api.post(URL, _body(port=port), format="json")
        elapsed = time.monotonic() - started
    assert response.status_code == 400
    assert "TLS handshake" in response.data["address"][0]
    assert elapsed < 10  # bounded by the timeout, not by the peer
    assert not Connection.objects.exists()


def test_kvm_host_is_checked_for_an_ssh_banner(api):
    with ssh_like_server() as port:
        response = api.post(URL, _body(name="kvm-01", kind="kvm", port=port), format="json")
    assert response.status_code == 201, response.data
    assert "SSH-2.0-OpenSSH" in response.data["last_test_message"]


def test_kvm_libvirt_uris_are_probed_where_they_point(api):
    with ssh_like_server() as port:
        uri = f"qemu+ssh://root@127.0.0.1:{port}/system"
        response = api.post(URL, _body(name="kvm-ssh", kind="kvm", address=uri), format="json")
    assert response.status_code == 201, response.data
    assert f"127.0.0.1:{port} answers with SSH-2.0" in response.data["last_test_message"]

    port = closed_port()
    uri = f"qemu+tcp://127.0.0.1:{port}/system"
    response = api.post(URL, _body(name="kvm-tcp", kind="kvm", address=uri), format="json")
    assert response.status_code == 400
    assert f"127.0.0.1:{port}" in str(response.data["address"])


def test_kvm_fingerprint_is_refused(api):
    response = api.post(
        URL, _body(kind="kvm", skip_test=True, tls_fingerprint="AA:BB"), format="json"
    )
    assert response.status_code == 400
    assert "tls_fingerprint" in response.data


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "vmware-workstation"}, "kind"),
        ({"port": 70000}, "port"),
        ({"name": ""}, "name"),
        ({"address": ""}, "address"),
    ],
)
def test_bad_input_gets_field_errors(api, body, field):
    response = api.post(URL, _body(skip_test=True, **body), format="json")
    assert response.status_code == 400
    assert field in response.data


def test_default_port_comes_from_the_kind(api):
    response = api.post(URL, _body(kind="hyperv", skip_test=True), format="json")
    assert response.status_code == 201
    assert response.data["port"] == 5986


def test_update_keeps_the_secret_unless_given_and_audits_before_after(api):
    created = api.post(URL, _body(skip_test=True), format="json").data
    response = api.patch(
        f"{URL}{created['id']}/", {"username": "backup", "skip_test": True}, format="json"
    )
    assert response.status_code == 200
    conn = Connection.objects.get()
    assert conn.username == "backup" and conn.get_secret() == "Sup3r-secret!"
    event = AuditEvent.objects.get(action="inventory.connection.update")
    assert event.before["username"] == "root" and event.after["username"] == "backup"


def test_test_action_records_the_outcome(api):
    created = api.post(URL, _body(port=closed_port(), skip_test=True), format="json").data
    response = api.post(f"{URL}{created['id']}/test/")
    assert response.status_code == 200
    assert response.data["ok"] is False
    conn = Connection.objects.get()
    assert conn.last_test_ok is False and "Cannot reach" in conn.last_test_message


def test_viewer_can_list_but_not_create_or_test(api, api_as):
    created = api.post(URL, _body(skip_test=True), format="json").data
    viewer = api_as("victor", "viewer")
    assert viewer.get(URL).data["count"] == 1
    assert viewer.post(URL, _body(name="x", skip_test=True), format="json").status_code == 403
    assert viewer.post(f"{URL}{created['id']}/test/").status_code == 403
    assert viewer.delete(f"{URL}{created['id']}/").status_code == 403
    assert Connection.objects.count() == 1


def test_user_without_role_is_refused(api, api_as):
    created = api.post(URL, _body(skip_test=True), format="json").data
    nobody = api_as("nobody")
    assert nobody.get(URL).status_code == 403
    assert nobody.get(f"{URL}{created['id']}/").status_code == 403


def test_token_authentication(admin_user, client):
    response = client.post("/api/auth/token/", {"username": "alice", "password": "pw-alice"})
    assert response.status_code == 200
    token = response.json()["token"]
    listed = client.get(URL, HTTP_AUTHORIZATION=f"Token {token}")
    assert listed.status_code == 200
    assert client.get(URL).status_code == 403
    wrong = client.post("/api/auth/token/", {"username": "alice", "password": "nope"})
    assert wrong.status_code == 400


# --- inventory sync: on creation and from the API -------------------------------------------


@pytest.fixture
def eager_celery():
    """Queued tasks run at once in this process (the worker's part of a sync, in-process)."""
    from backupconsole.celery import app

    app.conf.task_always_eager = True
    try:
        yield
    finally:
        app.conf.task_always_eager = False


def _sync_events(connection_pk):
    return list(
        AuditEvent.objects.filter(
            action__in=[SYNC_REQUESTED, SYNC_FAILED], object_id=str(connection_pk)
        ).order_by("id")
    )


def test_sync_action_queues_a_sync_that_runs(api, eager_celery, django_capture_on_commit_callbacks):
    missing = "/nonexistent/libvirt-sock"
    created = api.post(
        URL, _body(name="kvm-01", kind="kvm", address=missing, skip_test=True), format="json"
    ).data
    with django_capture_on_commit_callbacks(execute=True) as queued:
        response = api.post(f"{URL}{created['id']}/sync/")
    assert response.status_code == 202
    assert len(queued) == 1  # the sync is queued only once the request is committed
    # The task ran against the connection's endpoint: there is no libvirt there, and it says so.
    requested, failed = _sync_events(created["id"])[-2:]
    assert requested.action == SYNC_REQUESTED and requested.username == "alice"
    assert failed.action == SYNC_FAILED and missing in failed.after["message"]
    assert Connection.objects.get().last_synced_at is None


def test_a_new_connection_queues_its_first_sync(
    api, eager_celery, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True) as queued:
        created = api.post(
            URL,
            _body(name="kvm-01", kind="kvm", address="/nonexistent/sock", skip_test=True),
            format="json",
        ).data
    assert len(queued) == 1
    assert [e.action for e in _sync_events(created["id"])] == [SYNC_REQUESTED, SYNC_FAILED]

    # A kind without a connector yet (Hyper-V) has nothing to sync: nothing is queued.
    with django_capture_on_commit_callbacks(execute=True) as queued:
        other = api.post(URL, _body(name="hv", kind="hyperv", skip_test=True), format="json")
    assert other.status_code == 201 and queued == []
    assert _sync_events(other.data["id"]) == []


def test_viewer_may_not_sync(api, api_as):
    created = api.post(URL, _body(skip_test=True), format="json").data
    before = AuditEvent.objects.filter(action=SYNC_REQUESTED).count()
    viewer = api_as("victor", "viewer")
    assert viewer.post(f"{URL}{created['id']}/sync/").status_code == 403
    assert api_as("nobody").post(f"{URL}{created['id']}/sync/").status_code == 403
    assert AuditEvent.objects.filter(action=SYNC_REQUESTED).count() == before


@pytest.mark.integration
def test_a_worker_syncs_a_new_kvm_connection_and_a_requested_sync(
    celery_worker_process,
    libvirt_env,  # noqa: F811 - the fixtures
    libvirt_conn,  # noqa: F811
    kvm_domain,  # noqa: F811
    admin_user,
    tmp_path,
):
    """Real libvirtd and a real `celery worker` on the console queue: the connection's VMs appear
    without anyone asking, and a VM defined later appears after POST …/sync/."""
    from rest_framework.test import APIClient

    from inventory.kvm.libvirt_env import define_test_domain, remove_domain
    from inventory.models import VirtualMachine

    celery_worker_process("console")
    api = APIClient()
    api.force_authenticate(admin_user)
    response = api.post(
        URL,
        {"name": "kvm-lab", "kind": "kvm", "address": str(libvirt_env.socket_path)},
        format="json",
    )
    assert response.status_code == 201, response.data
    pk = response.data["id"]

    def names():
        listed = api.get("/api/inventory/vms/", {"connection": pk, "limit": 500}).data
        return {vm["name"] for vm in listed["results"]}

    _wait(lambda: kvm_domain.name in names(), "the first sync")
    later = define_test_domain(
        libvirt_conn, f"{kvm_domain.name}-b", [tmp_path / "b.qcow2"], tmp_path, start=False
    )
    try:
        assert later.name() not in names()
        assert api.post(f"{URL}{pk}/sync/").status_code == 202
        _wait(lambda: later.name() in names(), "the requested sync")
    finally:
        remove_domain(later)
    assert Connection.objects.get(pk=pk).last_synced_at is not None
    assert VirtualMachine.objects.get(name=later.name()).disks.count() == 1


def _wait(condition, what, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:.0f} s"
        time.sleep(0.3)
