"""A restore that fails or is cancelled half-way leaves nothing that looks restored: no file at the
target, no partial file next to it (storage.engine.target.new_file, inventory.kvm.restore)."""

from __future__ import annotations

from pathlib import Path

import pytest

from inventory.kvm.restore import restore_disk_file
from jobs.choices import RunResult, RunState
from jobs.models import JobRun
from jobs.restore import RestoreProgress, execute_restore
from storage.engine.fs import FilesystemBackend
from storage.engine.repository import Repository
from storage.engine.source import FileSource
from storage.engine.target import new_file
from storage.engine.writer import Cancelled, DiskInput, write_restore_point
from storage.models import RestorePoint
from tests.storage.helpers import MiB, make_image, sha256

SIZE = 32 * MiB


@pytest.fixture
def backed_up(tmp_path: Path) -> tuple[Repository, object, Path]:
    """A KVM restore point (as the KVM connector saves one) of a 32 MiB image."""
    image = tmp_path / "disk.raw"
    make_image(image, SIZE, seed=5, regions=80)
    repo = Repository.init(FilesystemBackend(tmp_path / "repo"), passphrase="pw")
    with FileSource(image) as source:
        manifest = write_restore_point(
            repo,
            vm_key="vm-1",
            vm_name="web-1",
            disks=[DiskInput("vda", source)],
            vm_config={"libvirt_xml": "<domain type='kvm'><name>web-1</name></domain>"},
        )
    return repo, manifest, image


def _cancel_on_call(n: int):
    calls = []

    def progress(done: int, total: int) -> None:
        calls.append(done)
        if len(calls) == n:  # half-way: some windows are written already
            raise Cancelled("cancelled while restoring")

    return progress, calls


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_a_cancelled_disk_restore_leaves_nothing(backed_up, tmp_path, fmt):
    repo, manifest, image = backed_up
    target = tmp_path / "out" / f"vda.{fmt}"
    target.parent.mkdir()
    progress, calls = _cancel_on_call(3)

    with pytest.raises(Cancelled):
        restore_disk_file(repo, manifest, "vda", target, fmt, progress)

    assert 0 < calls[-1] < SIZE
    assert list(target.parent.iterdir()) == []
    restored = restore_disk_file(repo, manifest, "vda", tmp_path / "out" / "vda.raw")
    assert sha256(restored) == sha256(image)  # and the same restore, uncancelled, works


def test_new_file_appears_only_when_complete(tmp_path):
    target = tmp_path / "disk.raw"
    with pytest.raises(OSError, match="full"), new_file(target) as partial:
        partial.write_bytes(b"half")
        raise OSError("disk full")
    assert list(tmp_path.iterdir()) == []

    with new_file(target) as partial:
        partial.write_bytes(b"whole")
    assert target.read_bytes() == b"whole" and list(tmp_path.iterdir()) == [target]

    with pytest.raises(FileExistsError, match="never overwrite"), new_file(target):
        pass
    assert target.read_bytes() == b"whole"

    other = tmp_path / "other.raw"
    with pytest.raises(FileExistsError, match="appeared while"), new_file(other) as partial:
        partial.write_bytes(b"ours")
        other.write_bytes(b"someone else's")  # written meanwhile: kept, not replaced
    assert other.read_bytes() == b"someone else's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disk.raw", "other.raw"]


@pytest.mark.django_db
def test_a_cancelled_restore_run_ends_cancelled_and_leaves_nothing(backed_up, api, tmp_path):
    body = {"name": "primary", "kind": "filesystem", "location": str(tmp_path / "repo")}
    attached = api.post("/api/storage/repositories/", {**body, "passphrase": "pw"}, format="json")
    assert attached.status_code == 201, attached.data  # attaching imports the restore point
    point = RestorePoint.objects.get()
    target = tmp_path / "restored.raw"
    request = {"what": "disk", "disk": "vda", "path": str(target), "format": "raw"}
    queued = api.post(f"/api/storage/restore-points/{point.pk}/restore/", request, format="json")
    assert queued.status_code == 202, queued.data
    # A cancel that arrives once the run works (cancel_run ends a queued run at once).
    JobRun.objects.filter(pk=queued.data["id"]).update(cancel_requested=True)

    execute_restore(queued.data["id"])

    run = JobRun.objects.get(pk=queued.data["id"])
    assert (run.state, run.result) == (RunState.FINISHED, RunResult.CANCELLED), run.reason
    assert "Cancelled by a user" in run.reason
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disk.raw", "repo"]


@pytest.mark.django_db
def test_a_cancel_that_arrives_when_all_is_written_does_not_undo_it():
    run = JobRun.objects.create(kind="restore", trigger="manual", cancel_requested=True)
    progress = RestoreProgress(run)

    progress(SIZE, SIZE)  # the end: complete stays complete

    with pytest.raises(Cancelled):
        RestoreProgress(run)(SIZE // 2, SIZE)
