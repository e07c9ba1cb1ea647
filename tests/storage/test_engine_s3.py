"""The engine on S3 (a real S3 protocol server, moto): backup, restore, GC, Object Lock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from storage.engine.backend import ObjectLocked
from storage.engine.gc import collect_garbage
from storage.engine.reader import restore_disk
from storage.engine.repository import Repository, RepositoryError
from storage.engine.source import FileSource
from storage.engine.verify import verify_repository
from storage.engine.writer import DiskInput, write_restore_point
from tests.storage.helpers import MiB, copy_sparse, make_image, scribble, sha256


def test_full_incremental_restore_and_gc_on_s3(make_s3_backend, s3_bucket, tmp_path):
    _, bucket = s3_bucket
    repo = Repository.init(make_s3_backend(bucket, prefix="vms"), passphrase="pw")
    base, day1 = tmp_path / "base.raw", tmp_path / "day1.raw"
    make_image(base, 16 * MiB, seed=8)
    copy_sparse(base, day1)
    extents = scribble(day1, seed=9, writes=6)
    with FileSource(base) as source:
        full = write_restore_point(
            repo, vm_key="vm-1", vm_name="vm", disks=[DiskInput("vda", source)]
        )
    with FileSource(day1) as source:
        incr = write_restore_point(
            repo,
            vm_key="vm-1",
            vm_name="vm",
            parent=full,
            disks=[DiskInput("vda", source, changed_extents=extents)],
        )
    reopened = Repository.open(make_s3_backend(bucket, prefix="vms"), passphrase="pw")
    restore_disk(reopened, reopened.find(incr.id), "vda", tmp_path / "r.raw")
    assert sha256(tmp_path / "r.raw") == sha256(day1)
    reopened.backend.delete(full.key)
    result = collect_garbage(reopened, now=datetime.now(UTC) + timedelta(hours=3))
    assert result.swept_objects > 0
    assert all(r.ok for r in verify_repository(reopened, deep=True))
    restore_disk(reopened, incr, "vda", tmp_path / "r2.raw")
    assert sha256(tmp_path / "r2.raw") == sha256(day1)


def test_object_lock_makes_restore_points_immutable(make_s3_backend, s3_lock_bucket, tmp_path):
    _, bucket = s3_lock_bucket
    repo = Repository.init(make_s3_backend(bucket), passphrase="pw", immutability_days=3)
    image = tmp_path / "disk.raw"
    make_image(image, 8 * MiB, seed=4)
    with FileSource(image) as source:
        point = write_restore_point(
            repo, vm_key="vm-1", vm_name="vm", disks=[DiskInput("vda", source)]
        )
    with pytest.raises(ObjectLocked, match="immutable until"):
        repo.backend.delete(point.key)
    chunk = next(iter(repo.backend.list("chunks/")))
    with pytest.raises(ObjectLocked):
        repo.backend.delete(chunk.key)
    assert repo.backend.exists(point.key) and repo.backend.exists(chunk.key)


def test_immutability_without_object_lock_is_refused(make_s3_backend, s3_bucket):
    _, bucket = s3_bucket
    with pytest.raises(RepositoryError, match="Object Lock"):
        Repository.init(make_s3_backend(bucket), passphrase="pw", immutability_days=3)
