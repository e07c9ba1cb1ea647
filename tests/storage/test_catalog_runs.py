"""The catalog and repository jobs: import after losing the database, verify/prune/GC runs."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.core.management import call_command

from jobs.choices import RunResult, RunState
from jobs.models import JobRun
from storage import maintenance
from storage.choices import RestorePointState
from storage.engine.source import FileSource
from storage.engine.writer import DiskInput, write_restore_point
from storage.engine_access import open_repository, vm_key_for
from storage.models import Repository, RestorePoint
from tests.factories import PolicyFactory, VirtualMachineFactory
from tests.storage.helpers import MiB, make_image, sha256

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]
URL = "/api/storage/repositories/"


@pytest.fixture
def repository(api, tmp_path):
    body = {
        "name": "primary",
        "kind": "filesystem",
        "location": str(tmp_path / "repo"),
        "passphrase": "repo passphrase",
    }
    response = api.post(URL, body, format="json")
    assert response.status_code == 201, response.data
    return Repository.objects.get(pk=response.data["id"])


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "disk.raw"
    make_image(path, 16 * MiB, seed=3)
    return path


def _write(repository, vm, image, created=None):
    engine = open_repository(repository)
    with FileSource(image) as source:
        return write_restore_point(
            engine,
            vm_key=vm_key_for(vm),
            vm_name=vm.name,
            created=created,
            disks=[DiskInput("vda", source)],
        )


def _run_job(api, path, body=None):
    response = api.post(path, body or {}, format="json")
    assert response.status_code == 202, response.data
    maintenance.execute_run(response.data["id"])  # what the worker does with the queued run
    return JobRun.objects.get(pk=response.data["id"])


def test_catalog_is_rebuilt_after_losing_the_database_and_restores_stand_alone(
    api, repository, image, tmp_path
):
    vm = VirtualMachineFactory(name="web-1", instance_uuid="4211-aaaa")
    manifest = _write(repository, vm, image)
    location = repository.location
    # The database is lost: every catalog row goes.
    RestorePoint.objects.all().delete()
    Repository.objects.all().delete()
    passphrase_file = tmp_path / "passphrase"
    passphrase_file.write_text("repo passphrase\n")
    call_command(
        "import_repository",
        "recovered",
        "--location",
        location,
        "--passphrase-file",
        str(passphrase_file),
    )
    point = RestorePoint.objects.get()
    assert point.point_id == manifest.id and point.repository.name == "recovered"
    assert point.vm == vm and point.vm_key == "4211-aaaa" and point.vm_name == "web-1"
    assert point.disks.get().capacity_bytes == 16 * MiB
    target = tmp_path / "restored.raw"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "storage",
            "--passphrase-file",
            str(passphrase_file),
            "restore",
            location,
            point.point_id,
            "vda",
            str(target),
        ],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert sha256(target) == sha256(image)
    call_command("import_repository", "recovered")  # idempotent
    assert RestorePoint.objects.count() == 1


def test_attaching_with_a_wrong_passphrase_is_refused(api, repository, tmp_path):
    body = {
        "name": "again",
        "kind": "filesystem",
        "location": repository.location,
        "passphrase": "not it",
    }
    response = api.post(URL, body, format="json")
    assert response.status_code == 400
    assert "does not open it" in response.data["passphrase"][0]


def test_verify_run_marks_corrupt_points_with_ranges(api, repository, image):
    vm = VirtualMachineFactory()
    good = _write(repository, vm, image)
    call_command("import_repository", repository.name)
    run = _run_job(api, f"{URL}{repository.pk}/verify/", {"deep": True})
    assert (run.state, run.result) == (RunState.FINISHED, RunResult.SUCCEEDED)
    assert RestorePoint.objects.get(point_id=good.id).state == RestorePointState.VERIFIED
    engine = open_repository(repository)
    first = engine.page(engine.disk_index(good.disks[0].index).pages[0])[0]
    chunk = Path(repository.location) / engine.chunk_key(first.digest)
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 1
    chunk.write_bytes(bytes(data))
    run = _run_job(api, f"{URL}{repository.pk}/verify/", {"deep": True})
    assert run.result == RunResult.FAILED and "1 of 1 corrupt" in run.reason
    point = RestorePoint.objects.get(point_id=good.id)
    assert point.state == RestorePointState.CORRUPT and "corrupt" in point.verify_error
    assert point.disks.get().corrupt_ranges[0] == [first.offset, first.end]
    assert run.logs.filter(level=40).exists()


def test_prune_and_gc_runs_apply_the_policy(api, repository, image):
    vm = VirtualMachineFactory()
    policy = PolicyFactory(repository=repository, keep_last=2)
    policy.vms.set([vm])
    policy.members.set([vm])
    points = [
        _write(repository, vm, image, created=datetime(2026, 11, d, tzinfo=UTC))
        for d in range(1, 5)
    ]
    call_command("import_repository", repository.name)
    RestorePoint.objects.filter(point_id=points[0].id).update(protected=True)
    preview = api.get(f"/api/jobs/policies/{policy.pk}/prune-preview/").data
    marks = {row["point_id"]: row["mark"] for row in preview}
    assert marks == {
        points[0].id: "protected",
        points[1].id: "remove",
        points[2].id: "keep",
        points[3].id: "keep",
    }
    run = _run_job(api, f"{URL}{repository.pk}/prune/")
    assert run.result == RunResult.SUCCEEDED and "Pruned 1" in run.reason
    assert set(RestorePoint.objects.values_list("point_id", flat=True)) == {
        points[0].id,
        points[2].id,
        points[3].id,
    }
    gc = _run_job(api, f"{URL}{repository.pk}/gc/")
    assert gc.result == RunResult.SUCCEEDED
    repository.refresh_from_db()
    assert repository.used_bytes > 0 and repository.usage_updated_at is not None
    listed = api.get(f"{URL}{repository.pk}/").data
    assert listed["dedup_ratio"] > 1  # three points of the same disk share their chunks
    assert listed["compression_ratio"] > 1


def test_restore_point_delete_respects_protection(api, repository, image):
    vm = VirtualMachineFactory()
    manifest = _write(repository, vm, image)
    call_command("import_repository", repository.name)
    point = RestorePoint.objects.get()
    point.protected = True
    point.save()
    response = api.delete(f"/api/storage/restore-points/{point.pk}/")
    assert response.status_code == 400 and "protected" in response.data["non_field_errors"][0]
    point.protected = False
    point.save()
    assert api.delete(f"/api/storage/restore-points/{point.pk}/").status_code == 204
    assert not (Path(repository.location) / manifest.key).exists()
    assert not RestorePoint.objects.exists()


def test_a_second_maintenance_run_of_a_kind_is_refused_while_one_is_queued(api, repository):
    assert api.post(f"{URL}{repository.pk}/gc/").status_code == 202
    response = api.post(f"{URL}{repository.pk}/gc/")
    assert response.status_code == 400 and "already active" in response.data["non_field_errors"][0]


def test_copy_run_sends_points_to_a_secondary_repository(api, repository, image, tmp_path):
    vm = VirtualMachineFactory()
    manifest = _write(repository, vm, image)
    call_command("import_repository", repository.name)
    body = {
        "name": "offsite",
        "kind": "filesystem",
        "location": str(tmp_path / "offsite"),
        "passphrase": "another passphrase",
    }
    target = api.post(URL, body, format="json").data
    run = _run_job(api, f"{URL}{repository.pk}/copy/", {"target": target["id"]})
    assert run.result == RunResult.SUCCEEDED and "Copied 1" in run.reason
    copied = RestorePoint.objects.get(repository_id=target["id"])
    assert copied.point_id == manifest.id and copied.vm == vm
    again = _run_job(api, f"{URL}{repository.pk}/copy/", {"target": target["id"]})
    assert "Copied 0" in again.reason  # nothing left to send
    same = api.post(f"{URL}{repository.pk}/copy/", {"target": repository.pk}, format="json")
    assert same.status_code == 400 and "another repository" in same.data["target"][0]
