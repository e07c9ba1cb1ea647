"""The storage engine on a real filesystem repository: round trips, incrementals, dedup, keys."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import blake3
import pytest

from storage.engine.fs import FilesystemBackend
from storage.engine.keys import WrongPassphrase
from storage.engine.reader import DiskImage, restore_disk
from storage.engine.repository import Repository, RepositoryError
from storage.engine.source import FileSource
from storage.engine.writer import DiskInput, write_restore_point
from tests.storage.helpers import MiB, copy_sparse, make_image, scribble, sha256
from tests.unavailable import unavailable

SIZE = 48 * MiB


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.init(FilesystemBackend(tmp_path / "repo"), passphrase="correct horse")


@pytest.fixture
def images(tmp_path: Path) -> tuple[Path, Path, list[tuple[int, int]]]:
    base, day1 = tmp_path / "base.raw", tmp_path / "day1.raw"
    make_image(base, SIZE)
    copy_sparse(base, day1)
    return base, day1, scribble(day1, seed=7, writes=25)


def _backup(repo, image, *, parent=None, extents=None, vm_key="vm-1"):
    with FileSource(image) as source:
        return write_restore_point(
            repo,
            vm_key=vm_key,
            vm_name=vm_key,
            parent=parent,
            disks=[DiskInput("vda", source, changed_extents=extents)],
        )


def test_full_and_incremental_restore_bit_for_bit(repo, images, tmp_path):
    base, day1, extents = images
    full = _backup(repo, base)
    incr = _backup(repo, day1, parent=full, extents=extents)
    for manifest, image in ((full, base), (incr, day1)):
        target = tmp_path / f"restored-{manifest.id}.raw"
        restore_disk(repo, manifest, "vda", target)
        assert sha256(target) == sha256(image)
        # Restores are sparse: far less allocated than the disk size.
        assert os.stat(target).st_blocks * 512 < SIZE // 2


def test_incremental_reads_and_stores_only_what_changed(repo, images):
    base, day1, extents = images
    full = _backup(repo, base)
    incr = _backup(repo, day1, parent=full, extents=extents)
    changed_bytes = sum(length for _, length in {(o, n) for o, n in extents})
    assert incr.stats.read_bytes <= changed_bytes
    assert incr.stats.read_bytes < SIZE * 0.1
    # New data: at most the changed bytes, plus a few small index pages.
    assert incr.stats.stored_bytes <= changed_bytes * 1.1 + 64 * 1024
    assert full.stats.read_bytes >= incr.stats.read_bytes


def test_full_backup_skips_holes(repo, tmp_path):
    image = tmp_path / "sparse.raw"
    with open(image, "wb") as handle:
        handle.truncate(256 * MiB)
        handle.seek(9 * MiB)
        handle.write(os.urandom(MiB))
        handle.seek(200 * MiB)
        handle.write(b"boot" * 1024)
    point = _backup(repo, image)
    assert point.stats.read_bytes == 8 * MiB  # the two aligned 4 MiB windows holding data
    restore_disk(repo, point, "vda", tmp_path / "r.raw")
    assert sha256(tmp_path / "r.raw") == sha256(image)


def test_restore_points_are_logically_full(repo, images, tmp_path):
    """The incremental restores with its parent's manifest gone: no chain to replay."""
    base, day1, extents = images
    full = _backup(repo, base)
    incr = _backup(repo, day1, parent=full, extents=extents)
    repo.backend.delete(full.key)
    reopened = Repository.open(repo.backend, passphrase="correct horse")
    restore_disk(reopened, reopened.find(incr.id), "vda", tmp_path / "r.raw")
    assert sha256(tmp_path / "r.raw") == sha256(day1)


def test_random_reads_match_the_image(repo, images):
    base, day1, extents = images
    incr = _backup(repo, day1, parent=_backup(repo, base), extents=extents)
    image = DiskImage.open(repo, incr, "vda")
    data = day1.read_bytes()
    for offset, length in [(0, 4096), (extents[0][0] - 100, 70000), (SIZE - 10, 100), (123457, 9)]:
        assert image.read(offset, length) == data[offset : offset + length]


def test_deduplication_is_global_across_vms(repo, images):
    base, _, _ = images
    first = _backup(repo, base, vm_key="vm-a")
    second = _backup(repo, base, vm_key="vm-b")
    assert first.stats.new_unique_bytes > 0
    assert second.stats.new_unique_bytes == 0
    assert second.stats.stored_bytes < 8 * 1024  # only its (shared) pages and index


def test_lost_tracking_full_read_stores_only_new_chunks(repo, images, tmp_path):
    base, _, _ = images
    full = _backup(repo, base)
    day2 = tmp_path / "day2.raw"
    copy_sparse(base, day2)
    scribble(day2, seed=11, writes=2)  # touches at most 4 of the 12 windows
    again = _backup(repo, day2, parent=full)  # no extents: read in full, same chain
    assert again.stats.read_bytes == full.stats.read_bytes
    assert 0 < again.stats.new_unique_bytes <= 4 * 4 * MiB
    restore_disk(repo, again, "vda", tmp_path / "r.raw")
    assert sha256(tmp_path / "r.raw") == sha256(day2)


def test_digests_are_keyed_in_encrypted_repositories(repo, tmp_path):
    data = b"some disk data" * 1000
    assert repo.codec.digest(data) != blake3.blake3(data).digest()
    plain = Repository.init(
        FilesystemBackend(tmp_path / "plain"), passphrase=None, encryption=False
    )
    assert plain.codec.digest(data) == blake3.blake3(data).digest()
    digest, _ = repo.put_blob(1, data)
    stored = (tmp_path / "repo" / repo.chunk_key(digest)).read_bytes()
    assert b"some disk data" not in stored


def test_wrong_passphrase_is_a_clear_error(repo):
    with pytest.raises(WrongPassphrase, match="wrong passphrase"):
        Repository.open(repo.backend, passphrase="Tr0ub4dor&3")
    with pytest.raises(RepositoryError, match="encrypted"):
        Repository.open(repo.backend, passphrase=None)


def test_passphrase_change_rewrites_no_data(repo, images, tmp_path):
    base, _, _ = images
    point = _backup(repo, base)
    chunks_before = {(i.key, i.modified) for i in repo.backend.list("chunks/")}
    repo.change_passphrase("new passphrase")
    with pytest.raises(WrongPassphrase):
        Repository.open(repo.backend, passphrase="correct horse")
    reopened = Repository.open(repo.backend, passphrase="new passphrase")
    restore_disk(reopened, point, "vda", tmp_path / "r.raw")
    assert sha256(tmp_path / "r.raw") == sha256(base)
    assert {(i.key, i.modified) for i in repo.backend.list("chunks/")} == chunks_before


def test_init_refuses_an_existing_repository(repo):
    with pytest.raises(RepositoryError, match="already holds"):
        Repository.init(repo.backend, passphrase="x")


def test_disk_size_change_between_points(repo, tmp_path):
    small, grown = tmp_path / "small.raw", tmp_path / "grown.raw"
    make_image(small, 8 * MiB, seed=3)
    copy_sparse(small, grown)
    with open(grown, "r+b") as handle:
        handle.truncate(12 * MiB)
        handle.seek(10 * MiB)
        handle.write(b"x" * 65536)
    first = _backup(repo, small)
    second = _backup(repo, grown, parent=first, extents=[(8 * MiB, 4 * MiB)])
    restore_disk(repo, second, "vda", tmp_path / "r.raw")
    assert sha256(tmp_path / "r.raw") == sha256(grown)


def test_fragmented_windows_are_compacted_from_the_repository(repo, tmp_path):
    """Many small incrementals in one window: the index stays small, the data stays right."""
    from storage.engine.writer import FRAGMENTED

    image = tmp_path / "hot.raw"
    make_image(image, 8 * MiB, seed=21, regions=10)
    point = _backup(repo, image)
    with open(image, "r+b") as handle:
        for day in range(24):
            offset = 4 * MiB + day * 64 * 1024 + 4096  # same window, a new spot each day
            handle.seek(offset)
            handle.write(os.urandom(4096))
            handle.flush()
            point = _backup(repo, image, parent=point, extents=[(offset, 4096)])
            entries = repo.page(repo.disk_index(point.disk("vda").index).pages[0])
            in_window = [e for e in entries if 4 * MiB <= e.offset < 8 * MiB]
            assert len(in_window) <= FRAGMENTED + 2
    restore_disk(repo, point, "vda", tmp_path / "r.raw")
    assert sha256(tmp_path / "r.raw") == sha256(image)


def test_writer_reports_progress_and_stage_busy_times(repo, images):
    base, _, _ = images
    updates = []
    with FileSource(base) as source:
        write_restore_point(
            repo,
            vm_key="vm-1",
            vm_name="vm",
            disks=[DiskInput("vda", source)],
            progress=updates.append,
        )
    assert updates and updates[-1].bytes_done == updates[-1].bytes_total > 0
    done = [u.bytes_done for u in updates]
    assert done == sorted(done)
    last = updates[-1]
    assert last.read_seconds > 0 and last.process_seconds > 0 and last.store_seconds > 0
    assert last.elapsed >= last.read_seconds * 0.5


@pytest.fixture
def loop_device(tmp_path):
    backing = tmp_path / "device.img"
    with open(backing, "wb") as handle:
        handle.write(b"\xff" * SIZE)  # old data the restore must overwrite, holes included
    result = subprocess.run(
        ["losetup", "--find", "--show", str(backing)], capture_output=True, text=True
    )
    if result.returncode != 0:
        unavailable(f"a loop device needs root: {result.stderr.strip()}")
    device = result.stdout.strip()
    yield device, backing
    subprocess.run(["losetup", "--detach", device], check=False)


def test_restore_to_a_block_device_zeroes_what_was_a_hole(repo, images, loop_device):
    base, _, _ = images
    device, backing = loop_device
    point = _backup(repo, base)
    restore_disk(repo, point, "vda", device)
    assert sha256(backing) == sha256(base)


def test_restore_with_worker_processes_equals_the_image(repo, images, tmp_path):
    base, day1, extents = images
    point = _backup(repo, day1, parent=_backup(repo, base), extents=extents)
    stats = restore_disk(repo, point, "vda", tmp_path / "r.raw", processes=2)
    assert sha256(tmp_path / "r.raw") == sha256(day1)
    assert os.stat(tmp_path / "r.raw").st_blocks * 512 < SIZE  # still sparse
    threads = restore_disk(repo, point, "vda", tmp_path / "t.raw")
    assert (stats.bytes_written, stats.chunks_read) == (threads.bytes_written, threads.chunks_read)
    assert stats.chunks_read > 0
