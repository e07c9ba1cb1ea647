"""Garbage collection (also while a backup writes), prune, secondary copies, immutability."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from storage.engine.backend import ObjectLocked
from storage.engine.copy import copy_point
from storage.engine.fs import FilesystemBackend
from storage.engine.gc import LOCK_KEY, collect_garbage
from storage.engine.prune import Mark, RetentionPolicy
from storage.engine.reader import restore_disk
from storage.engine.repository import Repository, RepositoryError
from storage.engine.retention import prune_vm
from storage.engine.source import FileSource
from storage.engine.verify import verify_repository
from storage.engine.writer import DiskInput, write_restore_point
from tests.storage.helpers import MiB, make_image, sha256

LATER = datetime.now(UTC) + timedelta(hours=3)  # everything existing now is past the grace


def _repo(path: Path, **kwargs) -> Repository:
    return Repository.init(FilesystemBackend(path), passphrase="pw", **kwargs)


def _backup(repo, image, vm_key="vm-1", parent=None, **kwargs):
    with FileSource(image) as source:
        return write_restore_point(
            repo,
            vm_key=vm_key,
            vm_name=vm_key,
            parent=parent,
            disks=[DiskInput("vda", source)],
            **kwargs,
        )


def _age_everything(repo: Repository, hours: int = 5) -> None:
    past = time.time() - hours * 3600
    root = Path(repo.backend.describe())
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, (past, past))


@pytest.fixture
def two_images(tmp_path):
    a, b = tmp_path / "a.raw", tmp_path / "b.raw"
    make_image(a, 24 * MiB, seed=1)
    make_image(b, 24 * MiB, seed=2)
    return a, b


def test_gc_removes_only_what_no_manifest_references(tmp_path, two_images):
    repo = _repo(tmp_path / "repo")
    a, b = two_images
    keep = _backup(repo, a, vm_key="vm-a")
    drop = _backup(repo, b, vm_key="vm-b")
    repo.backend.delete(drop.key)
    _age_everything(repo)
    result = collect_garbage(repo, now=datetime.now(UTC))
    assert result.swept_objects > 0 and result.points == 1
    assert all(r.ok for r in verify_repository(repo, deep=True))
    restore_disk(repo, keep, "vda", tmp_path / "r.raw")
    assert sha256(tmp_path / "r.raw") == sha256(a)
    again = collect_garbage(repo, now=datetime.now(UTC))
    assert again.swept_objects == 0


def test_gc_keeps_young_unreferenced_objects(tmp_path, two_images):
    repo = _repo(tmp_path / "repo")
    point = _backup(repo, two_images[0])
    repo.backend.delete(point.key)  # unreferenced, but written just now
    result = collect_garbage(repo)
    assert result.swept_objects == 0 and result.kept_young > 0


class SlowSource(FileSource):
    """A source that takes its time, so GC runs while the writer is mid-way."""

    def __init__(self, path, started: threading.Event) -> None:
        super().__init__(path)
        self.started = started

    def read(self, offset: int, length: int) -> bytes:
        self.started.set()
        time.sleep(0.05)
        return super().read(offset, length)

    def readinto(self, offset: int, buffer: memoryview) -> None:  # what the writer uses
        self.started.set()
        time.sleep(0.05)
        super().readinto(offset, buffer)


def test_gc_while_a_backup_writes_loses_nothing(tmp_path, two_images):
    """The orphaned chunks of a pruned point are reused by a running writer while GC sweeps."""
    repo = _repo(tmp_path / "repo")
    a, _ = two_images
    pruned = _backup(repo, a, vm_key="vm-a")
    repo.backend.delete(pruned.key)  # its chunks are now garbage...
    _age_everything(repo)  # ...and old enough to sweep
    started, done = threading.Event(), {}

    def writer() -> None:
        with SlowSource(a, started) as source:  # same data: every chunk is a dedup hit
            done["point"] = write_restore_point(
                repo, vm_key="vm-b", vm_name="vm-b", disks=[DiskInput("vda", source)], workers=1
            )

    thread = threading.Thread(target=writer)
    thread.start()
    assert started.wait(10)
    sweeps = []
    while thread.is_alive():
        sweeps.append(collect_garbage(repo, now=LATER))
    thread.join()
    assert sweeps, "GC ran while the writer was writing"
    point = done["point"]
    assert all(r.ok for r in verify_repository(repo, deep=True))
    restore_disk(repo, point, "vda", tmp_path / "r.raw")
    assert sha256(tmp_path / "r.raw") == sha256(a)


def test_prune_and_gc_exclude_each_other(tmp_path):
    repo = _repo(tmp_path / "repo")
    repo.backend.put(
        LOCK_KEY,
        b'{"operation": "prune", "host": "h", "since": "%s"}'
        % datetime.now(UTC).isoformat().encode(),
    )
    with pytest.raises(RepositoryError, match="prune is already running"):
        collect_garbage(repo)


def test_prune_removes_manifests_by_policy_and_respects_protection(tmp_path, two_images):
    repo = _repo(tmp_path / "repo")
    points = [
        _backup(repo, two_images[0], created=datetime(2026, 11, day, 22, tzinfo=UTC))
        for day in range(1, 6)
    ]
    decisions = prune_vm(
        repo,
        "vm-1",
        RetentionPolicy(keep_last=2),
        now=datetime.now(UTC),
        protected={points[0].id},
    )
    marks = {d.point.id: d.mark for d in decisions}
    assert marks[points[0].id] == Mark.PROTECTED
    assert [marks[p.id] for p in points[1:]] == [Mark.REMOVE, Mark.REMOVE, Mark.KEEP, Mark.KEEP]
    remaining = {key.rsplit("/", 1)[-1] for key in repo.manifest_keys()}
    assert remaining == {points[0].id, points[3].id, points[4].id}


def test_prune_keeps_the_parent_of_a_running_writer(tmp_path, two_images):
    repo = _repo(tmp_path / "repo")
    old = _backup(repo, two_images[0], created=datetime(2026, 1, 1, tzinfo=UTC))
    _backup(repo, two_images[0])
    with repo.writer_registration(old.key):
        decisions = prune_vm(repo, "vm-1", RetentionPolicy(keep_last=1), now=datetime.now(UTC))
    assert {d.point.id: d.mark for d in decisions}[old.id] == Mark.IN_USE
    assert repo.backend.exists(old.key)


def test_copy_to_a_repository_with_other_keys_sends_only_missing_chunks(tmp_path, two_images):
    source = _repo(tmp_path / "primary")
    target = Repository.init(FilesystemBackend(tmp_path / "copy"), passphrase="other passphrase")
    a, _ = two_images
    first = _backup(source, a, vm_key="vm-a")
    second = _backup(source, a, vm_key="vm-b")  # same data, other VM
    r1 = copy_point(source, target, first)
    r2 = copy_point(source, target, second)
    assert r1.chunks_sent > 0 and r2.chunks_sent == 0 and r2.chunks_present > 0
    assert copy_point(source, target, first).copied is False  # already there
    copied = Repository.open(FilesystemBackend(tmp_path / "copy"), passphrase="other passphrase")
    restore_disk(copied, copied.find(second.id), "vda", tmp_path / "r.raw")
    assert sha256(tmp_path / "r.raw") == sha256(a)


class FailingBackend(FilesystemBackend):
    """Fails after a number of writes, like a dropped connection mid-copy."""

    def __init__(self, root, fail_after: int) -> None:
        super().__init__(root)
        self.left = fail_after

    def put(self, key, data, **kwargs):
        if key.startswith("chunks/"):
            self.left -= 1
            if self.left < 0:
                raise ConnectionError("connection dropped")
        return super().put(key, data, **kwargs)


def test_an_interrupted_copy_resumes_without_resending(tmp_path, two_images):
    source = _repo(tmp_path / "primary")
    point = _backup(source, two_images[0])
    Repository.init(FilesystemBackend(tmp_path / "copy"), passphrase="x")
    flaky = Repository.open(FailingBackend(tmp_path / "copy", fail_after=2), passphrase="x")
    with pytest.raises(ConnectionError):
        copy_point(source, flaky, point)
    target = Repository.open(FilesystemBackend(tmp_path / "copy"), passphrase="x")
    assert target.manifest_keys() == []  # nothing half-visible
    resumed = copy_point(source, target, point)
    assert resumed.chunks_present == 2 and resumed.chunks_sent > 0
    assert all(r.ok for r in verify_repository(target, deep=True))


def test_filesystem_immutability_refuses_deletes(tmp_path, two_images):
    repo = _repo(tmp_path / "repo", immutability_days=7)
    point = _backup(repo, two_images[0])
    path = Path(repo.backend.describe()) / point.key
    assert path.stat().st_mode & 0o222 == 0  # written read-only
    assert point.immutable_until is not None
    assert point.immutable_until > datetime.now(UTC) + timedelta(days=6)
    with pytest.raises(ObjectLocked, match="immutable until"):
        repo.backend.delete(point.key)
    decisions = prune_vm(repo, "vm-1", RetentionPolicy(keep_last=1), now=datetime.now(UTC))
    assert repo.backend.exists(point.key) and decisions[0].mark == Mark.KEEP
