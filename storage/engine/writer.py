"""The disk writer: read → skip zeros → chunk → hash → dedup → compress → encrypt → store.

The caller's thread reads the source; a small thread pool hashes, compresses, encrypts and stores
(the libraries release the GIL). Pieces are read into a fixed pool of buffers (``workers * 2``),
so memory stays flat whatever the disk size and no multi-MiB buffer is allocated per piece; each
worker seals into its own reusable buffer. Each stage's busy time is measured so the engine can
name the bottleneck. The manifest is written last (docs/repository-format.md).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial

from storage.engine.directio import aligned_buffer
from storage.engine.envelope import KIND_CHUNK, KIND_INDEX, Buffer, Scratch
from storage.engine.extents import Range, from_lengths, normalize, split_aligned, total
from storage.engine.index import (
    ZERO_DIGEST,
    DiskIndex,
    Entry,
    cut,
    encode_page,
    overlay,
    split_by_page,
)
from storage.engine.manifest import VM_KEY, DiskRecord, Manifest, Stats, new_point_id
from storage.engine.repository import Repository, RepositoryError
from storage.engine.source import BlockSource, ReadsInto


class Cancelled(Exception):
    """The run was cancelled; nothing was committed."""


@dataclass
class DiskInput:
    device_key: str
    source: BlockSource
    # None: read everything allocated (full). Otherwise [(offset, length), ...] from change
    # tracking since the parent restore point: only these are read.
    changed_extents: list[tuple[int, int]] | None = None
    label: str = ""
    change_token: str = ""
    full_read_reason: str = ""


@dataclass
class Progress:
    device_key: str
    bytes_done: int
    bytes_total: int
    read_seconds: float
    process_seconds: float
    store_seconds: float
    elapsed: float


@dataclass
class _Counters:
    read_bytes: int = 0
    stored_bytes: int = 0
    new_chunk_bytes: int = 0
    read_seconds: float = 0.0
    process_seconds: float = 0.0
    store_seconds: float = 0.0
    compacted_windows: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, **values: float) -> None:
        with self.lock:
            for name, value in values.items():
                setattr(self, name, getattr(self, name) + value)


class _TimedBackend:
    """Counts time spent in the backend, for the repository-write busy figure."""

    def __init__(self, repo: Repository, counters: _Counters) -> None:
        self.repo, self.counters = repo, counters
        self.since = datetime.now(UTC)  # the writer's start, for the GC-safety rule
        self._local = threading.local()  # each thread's sealing buffer

    def store(
        self, kind: int, data: Buffer, digest: bytes | None = None
    ) -> tuple[bytes, int, bool]:
        """``Repository.put_blob`` with this writer's start and busy counters."""
        digest, stored = self.repo.put_blob(
            kind,
            data,
            since=self.since,
            digest=digest,
            timing=self._timing,
            scratch=self._scratch(),
        )
        return digest, stored, stored > 0

    def _scratch(self) -> Scratch:
        """This thread's sealing buffer (gone with the writer's threads)."""
        scratch: Scratch | None = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = Scratch(self.repo.config.chunk_size)
        return scratch

    def _timing(self, process: float, store: float) -> None:
        self.counters.add(process_seconds=process, store_seconds=store)


def _give_back(free: queue.SimpleQueue[memoryview], buffer: memoryview, _done: object) -> None:
    free.put(buffer)


def _full_ranges(source: BlockSource, chunk_size: int) -> list[Range]:
    """Allocated data widened to whole aligned windows: full backups store whole chunks."""
    windows = [
        (start // chunk_size * chunk_size, -(-end // chunk_size) * chunk_size)
        for start, end in source.allocated()
    ]
    return normalize(windows, limit=source.size)


class DiskWriter:
    def __init__(
        self,
        repo: Repository,
        disk: DiskInput,
        parent: DiskIndex | None,
        *,
        workers: int = 4,
        progress: Callable[[Progress], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> None:
        self.repo = repo
        self.disk = disk
        self.parent = parent
        self.workers = workers
        self.progress = progress
        self.should_cancel = should_cancel or (lambda: False)
        self.counters = _Counters()
        self.store = _TimedBackend(repo, self.counters)
        self.chunk_size = repo.config.chunk_size
        self._zero = bytes(self.chunk_size)
        self._parent_pages: dict[int, set[bytes]] = {}

    def _known(self, offset: int) -> set[bytes]:
        """Digests of the parent's page around ``offset``: safe to reuse without touching."""
        if self.parent is None:
            return set()
        number = offset // self.parent.span
        if number not in self._parent_pages:
            self._parent_pages.clear()  # one page at a time: memory stays flat
            digests: set[bytes] = set()
            if number < len(self.parent.pages) and self.parent.pages[number] != ZERO_DIGEST:
                digests = {e.digest for e in self.repo.page(self.parent.pages[number])}
            self._parent_pages[number] = digests
        return self._parent_pages[number]

    def _process(self, offset: int, data: Buffer, known: set[bytes]) -> Entry | None:
        started = time.perf_counter()
        if self._zero.startswith(data):  # memcmp, also for a memoryview
            self.counters.add(process_seconds=time.perf_counter() - started)
            return None
        digest = self.repo.codec.digest(data)
        if digest in known:
            self.counters.add(process_seconds=time.perf_counter() - started)
            return Entry(offset, len(data), 0, digest)
        self.counters.add(process_seconds=time.perf_counter() - started)
        digest, stored, written = self.store.store(KIND_CHUNK, data, digest)
        self.counters.add(stored_bytes=stored, new_chunk_bytes=len(data) if written else 0)
        return Entry(offset, len(data), 0, digest)

    def run(self) -> tuple[DiskIndex, list[Range]]:
        size = self.disk.source.size
        if self.disk.changed_extents is None:
            ranges = _full_ranges(self.disk.source, self.chunk_size)
            replaced = None
        else:
            ranges = normalize(from_lengths(self.disk.changed_extents), limit=size)
            replaced = ranges
        todo = total(ranges)
        entries: list[Entry] = []
        started = time.perf_counter()
        done = 0
        # A free buffer is a free slot: at most ``workers * 2`` pieces in memory at once.
        free: queue.SimpleQueue[memoryview] = queue.SimpleQueue()
        for _ in range(self.workers * 2):
            free.put(aligned_buffer(self.chunk_size))  # aligned: sources may read directly
        # One reader, in order: sequential reads, one at a time, are what disks (and the
        # virtual disks measured, which slowed down 4x with four in flight) serve fastest.
        into = self.disk.source if isinstance(self.disk.source, ReadsInto) else None
        futures: list[Future[Entry | None]] = []
        with ThreadPoolExecutor(self.workers, thread_name_prefix="chunk") as pool:
            # Pieces never cross an aligned window: equal data at equal places dedups, and
            # index entries stay inside one window (compaction and restore rely on it).
            for start, end in split_aligned(ranges, self.chunk_size):
                if self.should_cancel():
                    raise Cancelled("cancelled while reading")
                buffer = free.get()
                read_start = time.perf_counter()
                data: Buffer
                if into is not None:
                    data = buffer[: end - start]
                    into.readinto(start, data)
                else:
                    data = self.disk.source.read(start, end - start)
                self.counters.add(
                    read_seconds=time.perf_counter() - read_start, read_bytes=end - start
                )
                future = pool.submit(self._process, start, data, self._known(start))
                future.add_done_callback(partial(_give_back, free, buffer))
                futures.append(future)
                done += end - start
                self._report(done, todo, started)
                futures = self._drain(futures, entries)
            for future in futures:
                entry = future.result()
                if entry is not None:
                    entries.append(entry)
        index = self._build_index(size, entries, replaced)
        self._report(todo, todo, started)
        return index, ranges

    @staticmethod
    def _drain(
        futures: list[Future[Entry | None]], entries: list[Entry]
    ) -> list[Future[Entry | None]]:
        pending = []
        for future in futures:
            if future.done():
                entry = future.result()  # re-raises a worker's error here, promptly
                if entry is not None:
                    entries.append(entry)
            else:
                pending.append(future)
        return pending

    def _report(self, done: int, todo: int, started: float) -> None:
        if self.progress is None:
            return
        c = self.counters
        self.progress(
            Progress(
                self.disk.device_key,
                done,
                todo,
                c.read_seconds,
                c.process_seconds / self.workers,
                c.store_seconds / self.workers,
                time.perf_counter() - started,
            )
        )

    def _compact(self, entries: list[Entry], size: int) -> list[Entry]:
        """Rewrite fragmented windows as one full chunk, from the repository (never the source).

        Entries never cross an aligned window (writes are split at windows), so each window is
        rebuilt from its own entries; many incrementals then keep restore reads large.
        """
        windows: dict[int, list[Entry]] = {}
        for entry in entries:
            windows.setdefault(entry.offset // self.chunk_size, []).append(entry)
        out: list[Entry] = []
        for number, items in sorted(windows.items()):
            if len(items) <= FRAGMENTED:
                out.extend(items)
                continue
            start = number * self.chunk_size
            end = min(start + self.chunk_size, size)
            window = bytearray(end - start)
            chunks: dict[bytes, bytes] = {}
            for e in items:
                if e.digest not in chunks:
                    chunks[e.digest] = self.repo.get_chunk(e.digest)
                piece = chunks[e.digest][e.chunk_offset : e.chunk_offset + e.length]
                window[e.offset - start : e.end - start] = piece
            data = bytes(window)
            if data == self._zero[: len(data)]:
                continue
            digest, stored, written = self.store.store(KIND_CHUNK, data)
            self.counters.add(
                stored_bytes=stored,
                new_chunk_bytes=len(data) if written else 0,
                compacted_windows=1,
            )
            out.append(Entry(start, len(data), 0, digest))
        return out

    def _build_index(
        self, size: int, entries: list[Entry], replaced: list[Range] | None
    ) -> DiskIndex:
        span = self.repo.config.page_span
        count = -(-size // span)
        new_pages = split_by_page(entries, span)
        if replaced is None or self.parent is None:
            touched = set(range(count))
        else:
            touched = {
                n for start, end in replaced for n in range(start // span, (end - 1) // span + 1)
            }
            touched |= set(range(len(self.parent.pages), count))  # the disk grew
            if self.parent.size != size and self.parent.pages:
                touched.add(min(len(self.parent.pages), count) - 1)  # the boundary page
        pages: list[bytes] = []
        for number in range(count):
            if (
                number not in touched
                and self.parent is not None
                and number < len(self.parent.pages)
            ):
                pages.append(self.parent.pages[number])
                continue
            page_start, page_end = number * span, min((number + 1) * span, size)
            page_entries = new_pages.get(number, [])
            if replaced is not None and self.parent is not None and number < len(self.parent.pages):
                digest = self.parent.pages[number]
                old = self.repo.page(digest) if digest != ZERO_DIGEST else []
                old = cut(old, [(page_end, max(page_end, self.parent.size))])  # shrunk disks
                in_page = normalize(replaced, limit=page_end)
                in_page = [(max(s, page_start), e) for s, e in in_page if e > page_start]
                page_entries = self._compact(overlay(old, in_page, page_entries), size)
            if not page_entries:
                pages.append(ZERO_DIGEST)
                continue
            digest, stored, _ = self.store.store(KIND_INDEX, encode_page(page_entries))
            self.counters.add(stored_bytes=stored)
            pages.append(digest)
        return DiskIndex(size, span, tuple(pages))


# A chunk window described by more entries than this is rewritten as one chunk (compaction).
FRAGMENTED = 16


def write_restore_point(
    repo: Repository,
    *,
    vm_key: str,
    vm_name: str,
    disks: list[DiskInput],
    parent: Manifest | None = None,
    vm_config: dict[str, object] | None = None,
    consistency: str = "crash",
    created: datetime | None = None,
    workers: int = 4,
    progress: Callable[[Progress], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> Manifest:
    """Back up the disks of one VM as a new restore point; returns its committed manifest."""
    if not VM_KEY.match(vm_key):
        raise RepositoryError(f"invalid VM key {vm_key!r}: use a-z, 0-9 and '-', up to 64")
    if parent is not None and parent.vm_key != vm_key:
        raise RepositoryError("the parent restore point belongs to another VM")
    created = created or datetime.now(UTC)
    records: list[DiskRecord] = []
    stats = Stats()
    with repo.writer_registration(parent.key if parent else None):
        for disk in disks:
            parent_index = None
            if parent is not None:
                try:
                    parent_index = repo.disk_index(parent.disk(disk.device_key).index)
                except KeyError:
                    parent_index = None
            if disk.changed_extents is not None and parent_index is None:
                disk = DiskInput(
                    disk.device_key,
                    disk.source,
                    None,
                    disk.label,
                    disk.change_token,
                    disk.full_read_reason or "No earlier restore point of this disk to build on.",
                )
            writer = DiskWriter(
                repo,
                disk,
                parent_index,
                workers=workers,
                progress=progress,
                should_cancel=should_cancel,
            )
            index, _ranges = writer.run()
            index_digest, index_stored, _ = writer.store.store(KIND_INDEX, index.encode())
            c = writer.counters
            records.append(
                DiskRecord(
                    device_key=disk.device_key,
                    label=disk.label,
                    size=index.size,
                    index=index_digest.hex(),
                    read_bytes=c.read_bytes,
                    stored_bytes=c.stored_bytes + index_stored,
                    new_chunk_bytes=c.new_chunk_bytes,
                    change_token=disk.change_token,
                    full_read_reason=disk.full_read_reason,
                )
            )
            stats.logical_bytes += index.size
            stats.read_bytes += c.read_bytes
            stats.stored_bytes += c.stored_bytes + index_stored
            stats.new_unique_bytes += c.new_chunk_bytes
        manifest = Manifest(
            id=new_point_id(created),
            vm_key=vm_key,
            vm_name=vm_name,
            created=created,
            disks=records,
            consistency=consistency,
            vm_config=dict(vm_config or {}),
            parent=parent.id if parent else None,
            immutable_until=repo.retain_until(created),
            stats=stats,
        )
        repo.backend.flush()  # every chunk and index durable before the manifest names them
        repo.write_manifest(manifest)  # last: its presence commits the restore point
    return manifest
