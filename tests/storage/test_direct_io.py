"""Direct I/O paths (source reads, chunk files, restore targets) and their page-cache fallbacks:
same bytes either way, unaligned edges included."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from storage.engine import directio, source, target
from storage.engine.directio import ALIGN, aligned_buffer, cached_share
from storage.engine.fs import FilesystemBackend
from storage.engine.reader import restore_disk
from storage.engine.repository import Repository
from storage.engine.source import FileSource
from storage.engine.target import Target
from storage.engine.writer import DiskInput, write_restore_point
from tests.storage.helpers import MiB, copy_sparse, sha256
from tests.unavailable import unavailable

SIZE = 12 * MiB + 1536  # not a whole number of blocks


@pytest.fixture(params=["direct", "page cache"])
def io_mode(request, monkeypatch, tmp_path):
    """Each test runs as is, then with direct I/O unavailable (as on some filesystems)."""
    if request.param == "page cache":
        for module in (directio, source, target):
            monkeypatch.setattr(module, "open_direct", lambda path, flags: None)
    else:
        probe = directio.open_direct(str(tmp_path / "probe"), os.O_WRONLY | os.O_CREAT)
        if probe is None:
            unavailable(f"direct I/O on {tmp_path}'s filesystem (the direct paths are untested)")
        else:
            os.close(probe)
    return request.param


def _unaligned_image(path: Path, *, seed: int) -> None:
    """Data at 512-byte (not 4 KiB) offsets with odd lengths, holes and zeros between."""
    rng = random.Random(seed)
    with open(path, "wb") as handle:
        handle.truncate(SIZE)
        for _ in range(30):
            length = rng.randrange(1, 300_000)
            offset = rng.randrange(0, SIZE - length) // 512 * 512
            handle.seek(offset)
            handle.write(rng.randbytes(length) if rng.random() < 0.5 else b"log line\n" * 9000)
        handle.seek(SIZE - 700)
        handle.write(rng.randbytes(700))  # data up to the unaligned end
    _evict(path)


def _evict(path: Path) -> None:
    """Out of the page cache, as a disk not read lately: the source then reads it directly."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _scribble(path: Path, *, seed: int) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    extents = []
    with open(path, "r+b") as handle:
        for _ in range(40):
            length = rng.randrange(1, 20_000)
            offset = rng.randrange(0, SIZE - length)
            handle.seek(offset)
            handle.write(rng.randbytes(length) if rng.random() < 0.8 else bytes(length))
            extents.append((offset, length))
    return extents


def test_unaligned_disks_round_trip_bit_for_bit(tmp_path, io_mode):
    base, day1 = tmp_path / "base.raw", tmp_path / "day1.raw"
    _unaligned_image(base, seed=11)
    copy_sparse(base, day1)
    extents = _scribble(day1, seed=12)
    repo = Repository.init(FilesystemBackend(tmp_path / "repo"), passphrase="pw")
    points = []
    parent = None
    for image, changed in ((base, None), (day1, extents)):
        with FileSource(image) as src:
            parent = write_restore_point(
                repo,
                vm_key="vm-1",
                vm_name="vm-1",
                parent=parent,
                disks=[DiskInput("vda", src, changed_extents=changed)],
            )
        points.append((parent, image))
    reopened = Repository.open(FilesystemBackend(tmp_path / "repo"), passphrase="pw")
    for point, image in points:
        for processes in (0, 2):
            restored = tmp_path / f"restored-{processes}.raw"
            restore_disk(reopened, point, "vda", restored, processes=processes)
            assert restored.stat().st_size == SIZE
            assert sha256(restored) == sha256(image)
            assert restored.stat().st_blocks * 512 < SIZE  # holes stay holes


def test_target_writes_runs_with_unaligned_edges(tmp_path, io_mode):
    path = str(tmp_path / "t.raw")
    window = aligned_buffer(MiB)
    data = random.Random(5).randbytes(MiB)
    window[:] = data
    window[200_000:400_000] = bytes(200_000)  # a zero stretch: whole blocks of it are skipped
    out = Target(path, create=True, size=4 * MiB)
    assert out.direct == (io_mode == "direct")
    base = 2 * MiB
    written = out.write(window, base, base + 1000, base + MiB - 333)
    out.written(base, base + MiB)
    out.sync()
    out.close()
    assert written == MiB - 1333 - 2 * 65536  # the two whole zero blocks were not written
    expected = bytearray(4 * MiB)
    expected[base + 1000 : base + MiB - 333] = bytes(window[1000 : MiB - 333])
    assert Path(path).read_bytes() == expected


def test_file_source_reads_the_same_whichever_path(tmp_path, io_mode):
    image = tmp_path / "disk.raw"
    _unaligned_image(image, seed=3)
    expected = image.read_bytes()
    with FileSource(image) as src:
        buffer = aligned_buffer(4 * MiB)
        for cached in (False, True):  # read directly, then copied from the page cache
            if cached:
                image.read_bytes()
            else:
                _evict(image)
            share = cached_share(src.fd, 0, SIZE)
            assert share is None or (share > 0.5) == cached
            for offset, length in ((0, 4 * MiB), (ALIGN, 65536), (SIZE - 8192, 8192), (513, 777)):
                view = buffer[:length]
                src.readinto(offset, view)
                assert bytes(view) == expected[offset : offset + length]
        tail = SIZE // ALIGN * ALIGN
        with pytest.raises(OSError, match="short read"):
            src.readinto(tail, buffer[:ALIGN])  # an aligned read that crosses the end


def test_chunk_files_read_back_whichever_path(tmp_path, io_mode):
    backend = FilesystemBackend(tmp_path / "repo")
    rng = random.Random(9)
    buffer = aligned_buffer(2 * MiB)
    for size in (10, 4096, 70_000, 1_048_576, 1_048_576 + 123):
        payload = rng.randbytes(size)
        source_buffer = aligned_buffer(size)
        source_buffer[:] = payload
        key = f"chunks/ab/{size}"
        assert backend.put(key, source_buffer)
        assert bytes(backend.read_into(key, buffer) or b"") == payload  # from the page cache
        _evict(tmp_path / "repo" / key)
        assert bytes(backend.read_into(key, buffer) or b"") == payload  # directly, if it can
        assert backend.get(key) == payload
    assert backend.read_into("chunks/ab/1048699", aligned_buffer(MiB)) is None  # too large


class _ReadOnlySource:
    """A source with only ``read`` (as NBD and hypervisor transports are): the writer reads
    it in its own thread, into bytes, instead of into its buffers."""

    def __init__(self, path: Path) -> None:
        self.inner = FileSource(path)
        self.size = self.inner.size
        self.reads = 0

    def read(self, offset: int, length: int) -> bytes:
        self.reads += 1
        return self.inner.read(offset, length)

    def allocated(self) -> list[tuple[int, int]]:
        return self.inner.allocated()

    def close(self) -> None:
        self.inner.close()


def test_sources_without_readinto_back_up_the_same(tmp_path):
    image = tmp_path / "disk.raw"
    _unaligned_image(image, seed=21)
    repo = Repository.init(FilesystemBackend(tmp_path / "repo"), passphrase="pw")
    source = _ReadOnlySource(image)
    try:
        point = write_restore_point(
            repo, vm_key="vm-1", vm_name="vm-1", disks=[DiskInput("vda", source)]
        )
    finally:
        source.close()
    assert source.reads > 0
    restore_disk(repo, point, "vda", tmp_path / "r.raw")
    assert sha256(tmp_path / "r.raw") == sha256(image)
