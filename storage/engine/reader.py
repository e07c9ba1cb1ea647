"""Reading restore points: random-access reads of a disk, and parallel restore to a file or device.

Every chunk is checked against its digest as it is read, so corrupt data is never restored
silently: the read fails with CorruptObject naming the chunk.
"""

from __future__ import annotations

import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from storage.engine.fs import FilesystemBackend
from storage.engine.index import ZERO_DIGEST, DiskIndex, Entry
from storage.engine.manifest import Manifest
from storage.engine.repository import Repository

_ZERO_BLOCK = 64 * 1024
PROCESS_RESTORE_MIN = 1024**3  # smaller disks restore with threads (no process start-up)


class DiskImage:
    """Random access to one disk of one restore point (file-level restore, instant recovery)."""

    def __init__(self, repo: Repository, index: DiskIndex, *, cache_chunks: int = 8) -> None:
        self.repo = repo
        self.index = index
        self.size = index.size
        self._pages: OrderedDict[int, list[Entry]] = OrderedDict()
        self._chunks: OrderedDict[bytes, bytes] = OrderedDict()
        self._cache_chunks = cache_chunks
        self._lock = threading.Lock()

    @classmethod
    def open(cls, repo: Repository, manifest: Manifest, device_key: str) -> DiskImage:
        return cls(repo, repo.disk_index(manifest.disk(device_key).index))

    def page(self, number: int) -> list[Entry]:
        with self._lock:
            if number in self._pages:
                self._pages.move_to_end(number)
                return self._pages[number]
        digest = self.index.pages[number]
        entries = [] if digest == ZERO_DIGEST else self.repo.page(digest)
        with self._lock:
            self._pages[number] = entries
            while len(self._pages) > 4:
                self._pages.popitem(last=False)
        return entries

    def _chunk(self, digest: bytes) -> bytes:
        with self._lock:
            if digest in self._chunks:
                self._chunks.move_to_end(digest)
                return self._chunks[digest]
        data = self.repo.get_chunk(digest)
        with self._lock:
            self._chunks[digest] = data
            while len(self._chunks) > self._cache_chunks:
                self._chunks.popitem(last=False)
        return data

    def entries(self) -> Iterator[Entry]:
        for number in range(len(self.index.pages)):
            yield from self.page(number)

    def read(self, offset: int, length: int) -> bytes:
        """Bytes ``[offset, offset+length)`` of the disk (zeros where nothing is stored)."""
        end = min(offset + length, self.size)
        out = bytearray(max(end - offset, 0))
        span = self.index.span
        number = offset // span
        while number * span < end:
            for entry in self.page(number):
                if entry.end <= offset or entry.offset >= end:
                    continue
                start, stop = max(entry.offset, offset), min(entry.end, end)
                data = self._chunk(entry.digest)
                source = entry.chunk_offset + (start - entry.offset)
                out[start - offset : stop - offset] = data[source : source + (stop - start)]
            number += 1
        return bytes(out)


@dataclass
class RestoreStats:
    bytes_written: int = 0
    chunks_read: int = 0


def _is_block_device(path: str) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except FileNotFoundError:
        return False


def _write_sparse(fd: int, data: memoryview, offset: int) -> int:
    """Write ``data`` at ``offset`` skipping all-zero blocks (they stay holes in a new file)."""
    written = 0
    zero = bytes(_ZERO_BLOCK)
    for pos in range(0, len(data), _ZERO_BLOCK):
        block = data[pos : pos + _ZERO_BLOCK]
        if block != zero[: len(block)]:
            os.pwrite(fd, block, offset + pos)
            written += len(block)
    return written


def restore_disk(
    repo: Repository,
    manifest: Manifest,
    device_key: str,
    target: str | os.PathLike[str],
    *,
    workers: int = 4,
    processes: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> RestoreStats:
    """Write a disk of a restore point to a sparse raw file, or to a block device.

    Chunks are fetched in parallel (restores from a dedup store are random reads) with a bounded
    window, so memory stays flat.
    """
    target = os.fspath(target)
    index = repo.disk_index(manifest.disk(device_key).index)
    image = DiskImage(repo, index, cache_chunks=0)
    device = _is_block_device(target)
    flags = os.O_WRONLY | (0 if device else os.O_CREAT | os.O_TRUNC)
    fd = os.open(target, flags, 0o600)
    stats = RestoreStats()
    try:
        if not device:
            os.ftruncate(fd, index.size)
        else:
            _zero_gaps(fd, image)
        if processes is None:  # processes pay off once a disk is large enough to amortize them
            processes = min(os.cpu_count() or 1, 4) if index.size >= PROCESS_RESTORE_MIN else 0
        if processes > 1 and isinstance(repo.backend, FilesystemBackend):
            from storage.engine.parallel_restore import restore_windows

            stats.bytes_written = restore_windows(
                repo,
                _windows(image.entries(), repo.config.chunk_size),
                target,
                device=device,
                processes=processes,
                total=index.size,
                progress=progress,
            )
            os.fsync(fd)
            return stats
        lock = threading.Lock()
        window = threading.BoundedSemaphore(workers * 2)

        def restore_window(entries: list[Entry]) -> None:
            """One aligned window: each distinct chunk fetched once, however many pieces of
            it the window holds (incrementals cut old chunks into several entries)."""
            try:
                chunks: dict[bytes, bytes] = {}
                written = 0
                for entry in entries:
                    if entry.digest not in chunks:
                        chunks[entry.digest] = repo.get_chunk(entry.digest)
                    view = memoryview(chunks[entry.digest])[
                        entry.chunk_offset : entry.chunk_offset + entry.length
                    ]
                    if device:  # a device holds old data: every byte must be written
                        os.pwrite(fd, view, entry.offset)
                        written += len(view)
                    else:
                        written += _write_sparse(fd, view, entry.offset)
                with lock:
                    stats.bytes_written += written
                    stats.chunks_read += len(chunks)
            finally:
                window.release()

        futures: list[Future[None]] = []
        with ThreadPoolExecutor(workers, thread_name_prefix="restore") as pool:
            for entries in _windows(image.entries(), repo.config.chunk_size):
                window.acquire()
                futures.append(pool.submit(restore_window, entries))
                if progress:
                    progress(entries[-1].end, index.size)
                futures = _reap(futures)
            for future in futures:
                future.result()
        os.fsync(fd)
    finally:
        os.close(fd)
    return stats


def _windows(entries: Iterator[Entry], size: int) -> Iterator[list[Entry]]:
    """Entries grouped by aligned window (entries never cross one; see the format doc)."""
    group: list[Entry] = []
    for entry in entries:
        if group and entry.offset // size != group[0].offset // size:
            yield group
            group = []
        group.append(entry)
    if group:
        yield group


def _reap(futures: list[Future[None]]) -> list[Future[None]]:
    """Drop finished futures, re-raising a failed one's error at once."""
    pending = []
    for future in futures:
        if future.done():
            future.result()
        else:
            pending.append(future)
    return pending


def _zero_gaps(fd: int, image: DiskImage) -> None:
    """On a device, what no entry covers must be written as zeros (old data may be there)."""
    cursor = 0
    zero = bytes(1024 * 1024)
    for entry in [*image.entries(), Entry(image.size, 0, 0, ZERO_DIGEST)]:
        while cursor < entry.offset:
            length = min(len(zero), entry.offset - cursor)
            os.pwrite(fd, zero[:length], cursor)
            cursor += length
        cursor = max(cursor, entry.end)
