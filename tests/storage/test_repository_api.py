import pytest

from backupconsole.errors import ActionRefused
from backupconsole.models import AuditEvent
from storage import services
from storage.engine.fs import FilesystemBackend
from storage.engine.repository import Repository as EngineRepository
from storage.engine.source import FileSource
from storage.engine.writer import DiskInput, write_restore_point
from storage.models import Repository
from tests.factories import (
    PolicyFactory,
    RepositoryFactory,
    RestorePointFactory,
    repository_with_usage,
)
from tests.storage.helpers import MiB, make_image

URL = "/api/storage/repositories/"


def _fs(tmp_path, name="local", **extra):
    return {
        "name": name,
        "kind": "filesystem",
        "location": str(tmp_path / name),
        "passphrase": "repo passphrase",
        **extra,
    }


def test_filesystem_repository_is_created_initialized_and_measured(api, tmp_path):
    response = api.post(URL, _fs(tmp_path), format="json")
    assert response.status_code == 201, response.data
    assert (tmp_path / "local" / "config").is_file()
    assert list((tmp_path / "local" / "keys").iterdir())
    assert response.data["capacity_bytes"] > 0
    assert response.data["encryption_enabled"] is True
    assert len(response.data["key_fingerprint"]) == 39
    assert "passphrase" not in response.data
    repository = Repository.objects.get()
    assert repository.get_passphrase() == "repo passphrase"
    assert "repo passphrase" not in str(
        AuditEvent.objects.get(action="storage.repository.create").after
    )


def test_encrypted_repository_needs_a_passphrase(api, tmp_path):
    body = _fs(tmp_path)
    del body["passphrase"]
    response = api.post(URL, body, format="json")
    assert response.status_code == 400 and "passphrase" in response.data
    assert not (tmp_path / "local" / "config").exists()
    plain = api.post(URL, {**body, "encryption_enabled": False}, format="json")
    assert plain.status_code == 201


def test_relative_or_unwritable_location_is_refused(api, tmp_path):
    response = api.post(
        URL, {"name": "r", "kind": "filesystem", "location": "relative/dir"}, format="json"
    )
    assert response.status_code == 400 and "absolute" in response.data["location"][0]
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    response = api.post(
        URL, {"name": "r", "kind": "filesystem", "location": str(blocker / "x")}, format="json"
    )
    assert response.status_code == 400 and "cannot be written" in response.data["location"][0]
    assert not Repository.objects.exists()


def test_s3_repository_keeps_its_secret_key_encrypted(api, s3_bucket):
    endpoint, bucket = s3_bucket
    body = {
        "name": "s3",
        "kind": "s3",
        "location": bucket,
        "s3_endpoint": endpoint,
        "s3_region": "us-east-1",
        "s3_access_key": "AKIA-TEST",
        "secret": "wJalrXUtnFEMI/K7MDENG",
        "passphrase": "pp",
    }
    response = api.post(URL, body, format="json")
    assert response.status_code == 201, response.data
    assert response.data["has_secret"] is True and "secret" not in response.data
    assert Repository.objects.get().get_secret() == "wJalrXUtnFEMI/K7MDENG"
    event = AuditEvent.objects.get(action="storage.repository.create")
    assert "wJalrXUtnFEMI" not in str(event.after)


def test_s3_immutability_needs_object_lock(api, s3_bucket):
    endpoint, bucket = s3_bucket
    body = {
        "name": "s3",
        "kind": "s3",
        "location": bucket,
        "s3_endpoint": endpoint,
        "s3_access_key": "A",
        "secret": "B",
        "passphrase": "pp",
        "immutability_days": 7,
    }
    response = api.post(URL, body, format="json")
    assert response.status_code == 400 and "Object Lock" in response.data["location"][0]


def test_s3_repository_needs_a_secret(api):
    body = {"name": "s3", "kind": "s3", "location": "b", "s3_access_key": "A"}
    response = api.post(URL, body, format="json")
    assert response.status_code == 400 and "secret" in response.data


def test_location_cannot_change_after_creation(api, tmp_path):
    created = api.post(URL, _fs(tmp_path), format="json").data
    response = api.patch(f"{URL}{created['id']}/", {"location": "/elsewhere"}, format="json")
    assert response.status_code == 400 and "location" in response.data
    response = api.patch(f"{URL}{created['id']}/", {"capacity_bytes": 10**12}, format="json")
    assert response.status_code == 200 and response.data["capacity_bytes"] == 10**12


@pytest.mark.django_db
def test_repository_in_use_cannot_be_deleted(api):
    policy = PolicyFactory(name="nightly")
    response = api.delete(f"{URL}{policy.repository.pk}/")
    assert response.status_code == 400 and "nightly" in response.data["non_field_errors"][0]
    point = RestorePointFactory()
    response = api.delete(f"{URL}{point.repository.pk}/")
    assert response.status_code == 400 and "restore points" in response.data["non_field_errors"][0]
    empty = RepositoryFactory()
    assert api.delete(f"{URL}{empty.pk}/").status_code == 204


@pytest.mark.django_db
def test_operator_protects_restore_points_viewer_may_not(api_as):
    point = RestorePointFactory()
    url = f"/api/storage/restore-points/{point.pk}/protect/"
    assert (
        api_as("victor", "viewer").post(url, {"protected": True}, format="json").status_code == 403
    )
    response = api_as("olga", "operator").post(url, {"protected": True}, format="json")
    assert response.status_code == 200 and response.data["protected"] is True
    event = AuditEvent.objects.get(action="storage.restore_point.protect")
    assert event.username == "olga" and event.before == {"protected": False}


@pytest.mark.django_db
def test_vm_shows_its_latest_usable_restore_point(api):
    older = RestorePointFactory()
    newer = RestorePointFactory(vm=older.vm, repository=older.repository)
    RestorePointFactory(vm=older.vm, repository=older.repository, state="committing")
    assert api.get(f"/api/inventory/vms/{older.vm.pk}/").data["latest_restore_point"] == newer.pk


def test_usage_figures_are_the_consoles(api):
    repository = repository_with_usage("repo-primary")
    RepositoryFactory(name="repo-empty")

    rows = {row["name"]: row for row in api.get(URL).data["results"]}

    primary = rows["repo-primary"]
    assert (primary["point_count"], primary["logical_bytes"]) == (2, 20 * 2**30)
    assert (primary["unique_bytes"], primary["stored_bytes"]) == (4 * 2**30, 2 * 2**30)
    assert (primary["dedup_ratio"], primary["compression_ratio"]) == (5.0, 2.0)
    empty = rows["repo-empty"]
    assert (empty["point_count"], empty["dedup_ratio"], empty["compression_ratio"]) == (
        0,
        None,
        None,
    )
    assert api.get(f"{URL}{repository.pk}/").data["dedup_ratio"] == 5.0


def test_usage_figures_of_a_repository_just_created_or_changed(api, tmp_path):
    # Created over a repository that holds a restore point: attaching imports it, and the
    # answer counts it (the created row carries no usage annotations: usage_for queries).
    image = tmp_path / "disk.raw"
    make_image(image, 8 * MiB, seed=2)
    engine = EngineRepository.init(FilesystemBackend(tmp_path / "local"), passphrase="pw")
    with FileSource(image) as source:
        write_restore_point(engine, vm_key="vm-1", vm_name="a", disks=[DiskInput("vda", source)])
    created = api.post(URL, _fs(tmp_path, passphrase="pw"), format="json")
    assert created.status_code == 201, created.data
    assert created.data["point_count"] == 1 and created.data["logical_bytes"] == 8 * MiB
    assert created.data["dedup_ratio"] == 1.0 and created.data["compression_ratio"] > 1
    repository = repository_with_usage("repo-primary")

    changed = api.patch(f"{URL}{repository.pk}/", {"capacity_bytes": 2**40}, format="json")

    assert changed.status_code == 200, changed.data
    assert (changed.data["point_count"], changed.data["dedup_ratio"]) == (2, 5.0)


def test_start_restore_itself_checks_the_users_right(make_user):
    point = RestorePointFactory()
    options = {"what": "disk", "disk": "vda", "to": "file", "path": "/var/tmp/r.raw"}

    with pytest.raises(ActionRefused, match="does not allow restoring"):
        services.start_restore(point, options=options, acting_user=make_user("v", "viewer"))
