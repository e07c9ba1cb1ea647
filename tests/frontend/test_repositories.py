"""Repository pages: the list, the new-repository form, one repository with its restore points,
and the maintenance jobs, against real repositories on disk (and a real S3 server)."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from backupconsole.models import AuditEvent
from frontend.templatetags.console_tags import console_url
from jobs.choices import RunKind, RunResult
from jobs.models import JobRun
from storage import maintenance, services
from storage.catalog import record_manifest
from storage.choices import RestorePointState
from storage.engine.source import FileSource
from storage.engine.writer import DiskInput, write_restore_point
from storage.engine_access import open_repository, vm_key_for
from storage.models import Repository, RestorePoint
from tests.factories import (
    PolicyFactory,
    RepositoryFactory,
    RestorePointFactory,
    VirtualMachineFactory,
)
from tests.storage.conftest import moto_server, s3_bucket, s3_client  # noqa: F401 - fixtures
from tests.storage.helpers import MiB, make_image

pytestmark = pytest.mark.django_db

PASSPHRASE = "correct-horse-repository-passphrase"
S3_SECRET = "s3-secret-key-never-shown-0123456789"


@pytest.fixture
def repository(tmp_path: Path) -> Repository:
    """A real, encrypted filesystem repository."""
    return services.create_repository(
        data={"name": "primary", "kind": "filesystem", "location": str(tmp_path / "repo")},
        secret="",
        passphrase=PASSPHRASE,
        acting_user=None,
    )


def write_point(repository: Repository, vm: Any, image: Path) -> RestorePoint:
    """A real restore point of ``vm`` in ``repository`` and its catalog row."""
    engine = open_repository(repository)
    with FileSource(image) as source:
        manifest = write_restore_point(
            engine, vm_key=vm_key_for(vm), vm_name=vm.name, disks=[DiskInput("vda", source)]
        )
    return record_manifest(repository, manifest, vm=vm)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "disk.raw"
    make_image(path, 2 * MiB, seed=5, regions=8)
    return path


def job(client: Client, repository: Repository, kind: str, data: dict[str, Any] | None = None):  # type: ignore[no-untyped-def]
    return client.post(f"/repositories/{repository.pk}/jobs/{kind}/", data or {})


# --- the list ------------------------------------------------------------------------------------


def test_list_shows_kind_location_usage_ratios_points_and_last_verify(logged_in: Any) -> None:
    local = RepositoryFactory(name="local-a", location="/srv/backups/a")
    s3 = RepositoryFactory(
        name="s3-b",
        kind="s3",
        location="backups",
        s3_prefix="site1",
        s3_endpoint="https://minio.example:9000",
    )
    verified = timezone.now() - timedelta(days=2)
    RestorePointFactory(
        repository=local,
        logical_bytes=8 * MiB,
        new_unique_bytes=2 * MiB,
        stored_bytes=MiB,
        state=RestorePointState.VERIFIED,
        verified_at=verified,
    )
    RestorePointFactory(repository=local, logical_bytes=8 * MiB, state=RestorePointState.CORRUPT)
    client = logged_in("bob", "viewer")

    response = client.get("/repositories/")

    assert response.status_code == 200
    html = response.content.decode()
    row = re.search(rf'<tr data-testid="repository-row-{local.pk}">.*?</tr>', html, re.S)
    assert row
    cells = row.group(0)
    assert ">Local<" in cells and "/srv/backups/a" in cells
    assert "1.0\xa0MiB" in cells and "16.0\xa0MiB" in cells  # stored, logical
    assert 'data-testid="dedup-ratio">8.0\u00d7<' in cells  # 16 MiB logical / 2 MiB unique
    assert 'data-testid="compression-ratio">2.0\u00d7<' in cells  # 2 MiB unique / 1 MiB stored
    assert "1 corrupt" in cells
    assert timezone.localtime(verified).strftime("%Y-%m-%d %H:%M") in cells
    s3_row = re.search(rf'<tr data-testid="repository-row-{s3.pk}">.*?</tr>', html, re.S)
    assert s3_row
    assert ">S3<" in s3_row.group(0)
    assert "s3://backups/site1" in s3_row.group(0) and "minio.example" in s3_row.group(0)
    assert "never" in s3_row.group(0)
    assert 'id="repository-new"' not in html  # a viewer may not add


def test_list_filters_by_kind_as_an_htmx_partial(logged_in: Any) -> None:
    RepositoryFactory(name="local-a")
    RepositoryFactory(name="s3-b", kind="s3", location="bucket")
    client = logged_in("bob", "viewer")

    response = client.get("/repositories/", {"kind": "s3"}, HTTP_HX_REQUEST="true")

    html = response.content.decode()
    assert html.lstrip().startswith('<div id="repository-results"')
    assert "<html" not in html
    assert "s3-b" in html and "local-a" not in html
    # The back button after a history-cache miss is an HTMX request for the whole page.
    restored = client.get(
        "/repositories/",
        {"kind": "s3"},
        HTTP_HX_REQUEST="true",
        HTTP_HX_HISTORY_RESTORE_REQUEST="true",
    ).content.decode()
    assert "<html" in restored and "s3-b" in restored and "local-a" not in restored


def test_list_empty_states(logged_in: Any, client: Client) -> None:
    admin = logged_in("root", "administrator").get("/repositories/").content.decode()
    assert "No repositories yet." in admin
    assert 'href="/repositories/new/"' in admin and "Create a repository" in admin

    client.post("/logout/")
    viewer = logged_in("bob", "viewer").get("/repositories/").content.decode()
    assert "No repositories yet." in viewer
    assert 'href="/repositories/new/"' not in viewer

    RepositoryFactory(name="local-a")
    filtered = client.get("/repositories/", {"name": "nothing-like-it"}).content.decode()
    assert "No repository matches these filters." in filtered


def test_no_role_may_not_see_repositories(logged_in: Any) -> None:
    repository = RepositoryFactory()
    client = logged_in("carol")

    assert client.get("/repositories/").status_code == 403
    assert client.get(f"/repositories/{repository.pk}/").status_code == 404
    assert job(client, repository, "gc").status_code == 404
    assert not JobRun.objects.exists()


# --- the new repository form ---------------------------------------------------------------------


def test_admin_creates_an_encrypted_filesystem_repository(logged_in: Any, tmp_path: Path) -> None:
    client = logged_in("root", "administrator")
    form = client.get("/repositories/new/").content.decode()
    assert '<form id="repository-form"' in form
    for field in ("id_name", "id_location", "id_passphrase", "id_secret", "id_compression_level"):
        assert f'for="{field}"' in form  # every input has its label
    location = tmp_path / "new-repo"

    response = client.post(
        "/repositories/new/",
        {
            "name": "nas",
            "kind": "filesystem",
            "location": str(location),
            "encryption_enabled": "on",
            "passphrase": PASSPHRASE,
            "passphrase_again": PASSPHRASE,
            "compression_level": "3",
            "immutability_days": "0",
        },
    )

    repository = Repository.objects.get(name="nas")
    assert response.status_code == 302
    assert response["Location"] == f"/repositories/{repository.pk}/"
    assert (location / "config").exists()
    assert repository.encryption_enabled and repository.compression_level == 3
    assert repository.get_passphrase() == PASSPHRASE
    assert open_repository(repository).fingerprint() == repository.key_fingerprint
    assert AuditEvent.objects.filter(action="storage.repository.create").exists()
    page = client.get(response["Location"]).content.decode()
    assert "Repository nas is ready." in page
    assert PASSPHRASE not in page
    assert repository.key_fingerprint in page


def test_form_errors_are_next_to_their_fields_and_secrets_are_not_echoed(
    logged_in: Any, tmp_path: Path
) -> None:
    client = logged_in("root", "administrator")
    base = {
        "name": "nas",
        "kind": "filesystem",
        "encryption_enabled": "on",
        "compression_level": "1",
        "immutability_days": "0",
    }

    mismatch = client.post(
        "/repositories/new/",
        {
            **base,
            "location": str(tmp_path / "r"),
            "passphrase": PASSPHRASE,
            "passphrase_again": PASSPHRASE + "x",
        },
    ).content.decode()
    relative = client.post(
        "/repositories/new/",
        {
            **base,
            "location": "relative/dir",
            "passphrase": PASSPHRASE,
            "passphrase_again": PASSPHRASE,
        },
    ).content.decode()
    no_passphrase = client.post(
        "/repositories/new/", {**base, "location": str(tmp_path / "r2")}
    ).content.decode()

    assert re.search(r'id="id_passphrase_again_error">The two passphrases differ\.<', mismatch)
    assert re.search(r'id="id_location_error">Give an absolute directory path\.<', relative)
    assert re.search(
        r'id="id_passphrase_error">An encrypted repository needs a passphrase', no_passphrase
    )
    for html in (mismatch, relative):
        assert PASSPHRASE not in html
        assert re.search(r'<input type="password" name="passphrase"(?![^>]*value=)', html)
        assert 'value="nas"' in html  # ordinary fields keep what was typed
    assert not Repository.objects.exists()
    assert not (tmp_path / "r").exists()


def test_admin_creates_an_s3_repository_whose_secrets_are_never_shown(
    logged_in: Any,
    s3_bucket: tuple[str, str],  # noqa: F811 - the fixture imported above
) -> None:
    endpoint, bucket = s3_bucket
    client = logged_in("root", "administrator")
    data = {
        "name": "offsite",
        "kind": "s3",
        "location": bucket,
        "s3_endpoint": endpoint,
        "s3_region": "us-east-1",
        "s3_prefix": "console",
        "s3_access_key": "testing",
        "encryption_enabled": "on",
        "passphrase": PASSPHRASE,
        "passphrase_again": PASSPHRASE,
        "compression_level": "1",
        "immutability_days": "0",
    }

    refused = client.post("/repositories/new/", data).content.decode()  # no secret key
    response = client.post("/repositories/new/", {**data, "secret": S3_SECRET})

    assert re.search(r'id="id_secret_error">An S3 repository needs a secret key\.<', refused)
    assert response.status_code == 302, response.content.decode()[:2000]
    repository = Repository.objects.get(name="offsite")
    assert repository.get_secret() == S3_SECRET
    assert S3_SECRET not in repository.secret  # stored encrypted
    for page in (response["Location"], "/repositories/", "/"):
        html = client.get(page).content.decode()
        assert S3_SECRET not in html and PASSPHRASE not in html
    detail = client.get(response["Location"]).content.decode()
    assert f"s3://{bucket}/console" in detail
    assert "stored encrypted, never shown" in detail


def test_viewer_may_not_open_the_form(logged_in: Any) -> None:
    client = logged_in("bob", "viewer")

    assert client.get("/repositories/new/").status_code == 403
    assert client.post("/repositories/new/", {"name": "x"}).status_code == 403


# --- one repository: restore points --------------------------------------------------------------


def test_restore_points_newest_first_with_their_state_and_a_vm_filter(logged_in: Any) -> None:
    repository = RepositoryFactory(name="primary")
    web, db = VirtualMachineFactory(name="web-1"), VirtualMachineFactory(name="db-1")
    now = timezone.now()
    old = RestorePointFactory(repository=repository, vm=web, created_at=now - timedelta(days=2))
    new = RestorePointFactory(
        repository=repository,
        vm=web,
        created_at=now - timedelta(hours=1),
        state=RestorePointState.VERIFIED,
        verified_at=now,
    )
    bad = RestorePointFactory(
        repository=repository,
        vm=db,
        created_at=now - timedelta(days=1),
        state=RestorePointState.CORRUPT,
        verify_error="chunk 4f2a missing",
    )
    RestorePointFactory(vm=web)  # another repository's point
    client = logged_in("bob", "viewer")

    html = client.get(f"/repositories/{repository.pk}/").content.decode()
    filtered = client.get(
        f"/repositories/{repository.pk}/", {"vm": web.pk}, HTTP_HX_REQUEST="true"
    ).content.decode()

    rows = re.findall(r'<tr id="restore-point-(\d+)">', html)
    assert rows == [str(new.pk), str(bad.pk), str(old.pk)]
    assert "Verified" in html and 'title="chunk 4f2a missing">Corrupt<' in html
    assert re.findall(r'<tr id="restore-point-(\d+)">', filtered) == [str(new.pk), str(old.pk)]
    assert filtered.lstrip().startswith('<section class="card" id="restore-points"')
    assert f'<option value="{web.pk}" selected>web-1</option>' in filtered


def test_restore_points_are_paged_and_the_pages_keep_the_filter(logged_in: Any) -> None:
    repository = RepositoryFactory()
    web = VirtualMachineFactory(name="web-1")
    now = timezone.now()
    points = [
        RestorePointFactory(repository=repository, vm=web, created_at=now - timedelta(hours=n))
        for n in range(30)
    ]
    RestorePointFactory(repository=repository)  # another VM's
    client = logged_in("bob", "viewer")
    url = f"/repositories/{repository.pk}/"

    first = client.get(url, {"vm": web.pk}).content.decode()
    second = client.get(url, {"vm": web.pk, "page": 2}, HTTP_HX_REQUEST="true").content.decode()

    assert len(re.findall(r'<tr id="restore-point-', first)) == 25
    assert "Page 1 of 2" in first
    assert f'href="?vm={web.pk}&amp;page=2"' in first
    shown = [int(pk) for pk in re.findall(r'<tr id="restore-point-(\d+)">', second)]
    assert shown == [p.pk for p in points[25:]]


def test_viewer_sees_no_actions_and_is_refused_them(logged_in: Any) -> None:
    repository = RepositoryFactory()
    point = RestorePointFactory(repository=repository)
    client = logged_in("bob", "viewer")

    html = client.get(f"/repositories/{repository.pk}/").content.decode()

    assert 'id="repository-verify"' not in html
    assert f'data-testid="protect-{point.pk}"' not in html
    assert f'data-testid="delete-{point.pk}"' not in html
    assert job(client, repository, "verify").status_code == 403
    assert job(client, repository, "gc").status_code == 403
    base = f"/repositories/{repository.pk}/points/{point.pk}"
    assert client.post(f"{base}/protect/", {"protected": "true"}).status_code == 403
    assert client.get(f"{base}/delete/").status_code == 403
    assert client.post(f"{base}/delete/").status_code == 403
    assert not JobRun.objects.exists()
    point.refresh_from_db()
    assert not point.protected


def test_operator_protects_a_point_but_may_not_delete(logged_in: Any) -> None:
    repository = RepositoryFactory()
    point = RestorePointFactory(repository=repository)
    client = logged_in("olga", "operator")
    base = f"/repositories/{repository.pk}/points/{point.pk}"

    page = client.get(f"/repositories/{repository.pk}/").content.decode()
    response = client.post(f"{base}/protect/", {"protected": "true"})

    assert f'data-testid="protect-{point.pk}"' in page
    assert f'data-testid="delete-{point.pk}"' not in page
    assert response.status_code == 302
    point.refresh_from_db()
    assert point.protected
    assert AuditEvent.objects.filter(action="storage.restore_point.protect").exists()
    assert client.post(f"{base}/delete/").status_code == 403
    assert RestorePoint.objects.filter(pk=point.pk).exists()


def test_admin_deletes_a_real_point_after_confirming(
    logged_in: Any, repository: Repository, image: Path
) -> None:
    point = write_point(repository, VirtualMachineFactory(name="web-1"), image)
    manifest = Path(repository.location) / point.manifest_path
    assert manifest.exists()
    client = logged_in("root", "administrator")
    url = f"/repositories/{repository.pk}/points/{point.pk}/delete/"

    page = client.get(f"/repositories/{repository.pk}/").content.decode()
    confirm = client.get(url).content.decode()
    assert f'href="{url}"' in page
    assert "Delete this restore point?" in confirm and 'id="restore-point-delete"' in confirm
    assert RestorePoint.objects.filter(pk=point.pk).exists()  # a GET deletes nothing

    response = client.post(url, follow=True)

    assert not RestorePoint.objects.filter(pk=point.pk).exists()
    assert not manifest.exists()
    assert "deleted; the next garbage collection frees its data" in response.content.decode()


def test_a_protected_point_is_not_deleted(logged_in: Any) -> None:
    repository = RepositoryFactory()
    point = RestorePointFactory(repository=repository, protected=True)
    client = logged_in("root", "administrator")

    page = client.get(f"/repositories/{repository.pk}/").content.decode()
    response = client.post(f"/repositories/{repository.pk}/points/{point.pk}/delete/", follow=True)

    assert f'data-testid="delete-{point.pk}"' not in page
    assert "lift the protection first" in response.content.decode()
    assert RestorePoint.objects.filter(pk=point.pk).exists()


# --- maintenance jobs ----------------------------------------------------------------------------


def test_operator_verifies_deep_and_lands_on_the_run_page(
    logged_in: Any, repository: Repository, image: Path
) -> None:
    point = write_point(repository, VirtualMachineFactory(name="web-1"), image)
    client = logged_in("olga", "operator")
    page = client.get(f"/repositories/{repository.pk}/").content.decode()
    assert '<form id="repository-verify"' in page

    response = job(client, repository, "verify", {"verify-deep": "on"})

    run = JobRun.objects.get()
    assert (run.kind, run.repository, run.options) == (RunKind.VERIFY, repository, {"deep": True})
    assert run.requested_by.username == "olga"
    assert response["Location"] == (console_url("run", run.pk) or f"/repositories/{repository.pk}/")
    maintenance.execute_run(run.pk)  # what the worker does with the queued run
    point.refresh_from_db()
    assert point.state == RestorePointState.VERIFIED
    detail = client.get(f"/repositories/{repository.pk}/").content.decode()
    runs = re.search(r'<section class="card" id="repository-runs".*?</section>', detail, re.S)
    assert runs and f"#{run.pk}" in runs.group(0)
    assert "Verify (deep)" in runs.group(0) and "Succeeded" in runs.group(0)
    assert (
        'data-testid="usage-verified">'
        + timezone.localtime(point.verified_at).strftime("%Y-%m-%d %H:%M")
        in detail
    )


def test_prune_gc_and_copy_start_runs_with_their_options(logged_in: Any) -> None:
    repository = RepositoryFactory(name="primary")
    other = RepositoryFactory(name="secondary")
    policy = PolicyFactory(repository=repository)
    client = logged_in("olga", "operator")

    job(client, repository, "prune", {"prune-policy": policy.pk})
    job(client, repository, "gc")
    job(client, repository, "copy", {"copy-target": other.pk})

    runs = {run.kind: run for run in JobRun.objects.filter(repository=repository)}
    assert runs[RunKind.PRUNE].options == {"policy": policy.pk}
    assert runs[RunKind.GC].options == {}
    assert runs[RunKind.COPY].options == {"target": other.pk}


def test_copy_to_itself_or_a_hidden_repository_is_refused(logged_in: Any) -> None:
    repository = RepositoryFactory(name="web-primary")
    hidden = RepositoryFactory(name="db-secondary")
    client = logged_in(
        "olga",
        "operator",
        object_types=["storage.repository"],
        constraints={"name__startswith": "web-"},
    )

    to_self = job(client, repository, "copy", {"copy-target": repository.pk})
    to_hidden = job(client, repository, "copy", {"copy-target": hidden.pk})

    assert not JobRun.objects.exists()
    assert to_self.status_code == to_hidden.status_code == 302
    page = client.get(to_hidden["Location"]).content.decode()
    assert "Secondary copy not started" in page
    assert "db-secondary" not in page


def test_a_second_active_job_of_a_kind_is_refused_with_a_message(logged_in: Any) -> None:
    repository = RepositoryFactory()
    client = logged_in("olga", "operator")

    job(client, repository, "gc")
    response = job(client, repository, "gc")

    assert JobRun.objects.filter(kind=RunKind.GC).count() == 1
    page = client.get(response["Location"]).content.decode()
    assert "A garbage collection run is already active." in page


def test_an_unknown_job_is_not_found(logged_in: Any) -> None:
    repository = RepositoryFactory()
    client = logged_in("root", "administrator")

    assert job(client, repository, "format-disk").status_code == 404
    assert client.get(f"/repositories/{repository.pk}/jobs/gc/").status_code == 405


def test_recent_maintenance_runs_exclude_backups_and_restores(logged_in: Any) -> None:
    repository = RepositoryFactory()
    gc = JobRun.objects.create(
        kind=RunKind.GC, repository=repository, trigger="manual", result=RunResult.SUCCEEDED
    )
    restore = JobRun.objects.create(kind=RunKind.RESTORE, repository=repository, trigger="manual")
    client = logged_in("bob", "viewer")

    html = client.get(f"/repositories/{repository.pk}/").content.decode()

    runs = re.search(r'<section class="card" id="repository-runs".*?</section>', html, re.S)
    assert runs
    assert f"#{gc.pk}" in runs.group(0)
    assert f"#{restore.pk}" not in runs.group(0)


# --- cost ----------------------------------------------------------------------------------------


def _count_queries(client: Client, url: str) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    return len(queries.captured_queries)


def test_list_and_detail_queries_do_not_grow_with_the_rows(logged_in: Any) -> None:
    repository = RepositoryFactory(name="primary")
    pages = ("/repositories/", f"/repositories/{repository.pk}/")
    client = logged_in("olga", "operator")

    def grow(count: int) -> list[int]:
        for _ in range(count):
            RepositoryFactory()
            RestorePointFactory(repository=repository, vm=VirtualMachineFactory(), protected=True)
            JobRun.objects.create(kind=RunKind.VERIFY, repository=repository, trigger="manual")
        return [_count_queries(client, url) for url in pages]

    assert grow(2) == grow(6)
