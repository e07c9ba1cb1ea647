"""Reading restore points: random-access reads of a disk, and parallel restore to a file or device.

Every chunk is checked against its digest as it is read, so corrupt data is never restored
silently: the read fails with CorruptObject naming the chunk.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from storage.engine.directio import aligned_buffer
from storage.engine.envelope import Scratch
from storage.engine.extents import Range, normalize
from storage.engine.fs import FilesystemBackend
from storage.engine.index import ZERO_DIGEST, DiskIndex, Entry
from storage.engine.manifest import Manifest
from storage.engine.repository import Repository
from storage.engine.target import Target, new_file


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


class WindowFiller:
    """Assembles aligned windows of a restore point in memory (one per thread or process).

    Each distinct chunk of a window is read and opened once, into reusable buffers, and its
    pieces are copied into an aligned window buffer (a chunk that fills its window alone is
    opened in place), ready for one write per run of data.
    """

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.size = repo.config.chunk_size
        self.scratch = Scratch(self.size)

    def fill(self, entries: Sequence[Entry], window: memoryview) -> tuple[int, list[Range], int]:
        """(the window's disk offset, the runs of disk ranges it covers, distinct chunks read)."""
        base = entries[0].offset // self.size * self.size
        by_chunk: dict[bytes, list[Entry]] = {}
        for e in entries:
            by_chunk.setdefault(e.digest, []).append(e)
        for digest, pieces in by_chunk.items():
            first = pieces[0]
            alone = len(entries) == 1 and first.chunk_offset == 0
            dest = window[first.offset - base :] if alone else None
            data = self.repo.get_chunk_into(digest, self.scratch, dest)
            if data.obj is window.obj:
                continue  # opened in place
            for e in pieces:
                window[e.offset - base : e.end - base] = data[
                    e.chunk_offset : e.chunk_offset + e.length
                ]
        runs = normalize((e.offset, e.end) for e in entries)
        return base, runs, len(by_chunk)


def write_window(out: Target, window: memoryview, base: int, runs: list[Range]) -> int:
    """Write a filled window's runs; returns the bytes written (zero blocks are skipped)."""
    written = sum(out.write(window, base, start, end) for start, end in runs)
    out.written(runs[0][0], runs[-1][1])
    return written


class _WindowQueue:
    """Filled windows, written by one thread while the workers fill the next ones.

    The disk is then never idle waiting for the CPU, and sees one write at a time (the virtual
    disks measured wrote no faster with several in flight). Free window buffers bound memory.
    """

    def __init__(self, out: Target, size: int, buffers: int) -> None:
        self.out = out
        self.free: queue.SimpleQueue[memoryview] = queue.SimpleQueue()
        for _ in range(buffers):
            self.free.put(aligned_buffer(size))
        self.filled: queue.SimpleQueue[tuple[memoryview, int, list[Range]] | None]
        self.filled = queue.SimpleQueue()
        self.written = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="restore-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.filled.get()) is not None:
            window, base, runs = item
            try:
                if self.error is None:
                    self.written += write_window(self.out, window, base, runs)
            except BaseException as exc:  # reported by close(); keep freeing buffers
                self.error = exc
            finally:
                self.free.put(window)

    def close(self, *, check: bool = True) -> int:
        """Wait for every queued window; the bytes written, or (``check``) the writer's error."""
        self.filled.put(None)
        self.thread.join()
        if check and self.error is not None:
            raise self.error
        return self.written


def restore_disk(
    repo: Repository,
    manifest: Manifest,
    device_key: str,
    target: str | os.PathLike[str],
    *,
    workers: int = 4,
    processes: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> RestoreStats:
    """Write a disk of a restore point to a sparse raw file, or to a block device.

    Chunks are fetched in parallel (restores from a dedup store are random reads) with a bounded
    window, so memory stays flat: ``workers`` threads read, decrypt, decompress and check chunks
    (all without the GIL) into window buffers that one more thread writes (``_WindowQueue``).
    ``processes`` > 1 uses worker processes instead (filesystem repositories only; they cost a
    start-up each and measured no faster, bench/README.md).
    """
    path = os.fspath(target)
    index = repo.disk_index(manifest.disk(device_key).index)
    image = DiskImage(repo, index, cache_chunks=0)
    out = Target(path, create=True, size=index.size)
    stats = RestoreStats()
    try:
        if out.device:
            _zero_gaps(out.fd, image)
        if processes > 1 and isinstance(repo.backend, FilesystemBackend):
            from storage.engine.parallel_restore import restore_windows

            stats.bytes_written, stats.chunks_read = restore_windows(
                repo,
                _windows(image.entries(), repo.config.chunk_size),
                path,
                processes=processes,
                total=index.size,
                progress=progress,
            )
            out.sync()
            return stats
        lock = threading.Lock()
        slots = threading.BoundedSemaphore(workers * 2)  # windows handed to the pool
        local = threading.local()
        writes = _WindowQueue(out, repo.config.chunk_size, workers + 2)

        def restore_window(entries: list[Entry]) -> None:
            try:
                if not hasattr(local, "filler"):
                    local.filler = WindowFiller(repo)
                buffer = writes.free.get()
                try:
                    base, runs, chunks = local.filler.fill(entries, buffer)
                except BaseException:
                    writes.free.put(buffer)
                    raise
                writes.filled.put((buffer, base, runs))
                with lock:
                    stats.chunks_read += chunks
            finally:
                slots.release()

        futures: list[Future[None]] = []
        try:
            with ThreadPoolExecutor(workers, thread_name_prefix="restore") as pool:
                for entries in _windows(image.entries(), repo.config.chunk_size):
                    slots.acquire()
                    futures.append(pool.submit(restore_window, entries))
                    if progress:
                        progress(entries[-1].end, index.size)
                    futures = _reap(futures)
                for future in futures:
                    future.result()
        except BaseException:
            writes.close(check=False)  # the first error is the one to report
            raise
        stats.bytes_written = writes.close()
        out.sync()
    finally:
        out.close()
    return stats


def restore_disk_file(
    repo: Repository,
    manifest: Manifest,
    device_key: str,
    target: str | os.PathLike[str],
    *,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """One disk to a new sparse raw file; nothing is left at ``target`` unless it all worked
    (``target.new_file``: a failed or cancelled restore removes its partial file)."""
    path = Path(target)
    with new_file(path) as partial:
        restore_disk(repo, manifest, device_key, partial, progress=progress)
    return path


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
