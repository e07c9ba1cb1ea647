"""Restore with worker processes: each opens the repository itself and writes its windows
straight into the target, so only small work orders cross process boundaries.

Threads share one GIL, and a restore's per-chunk work (AES-GCM holds the GIL; decompression,
hashing and page-cache writes contend) scaled poorly across cores with threads; processes
scale. Used for filesystem repositories; other backends restore with threads.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor

from storage.engine.fs import FilesystemBackend
from storage.engine.index import Entry
from storage.engine.keys import MasterKey
from storage.engine.repository import Config, Repository

_WorkOrder = list[tuple[int, int, int, bytes]]  # (offset, length, chunk_offset, digest)
_repo: Repository | None = None
_fd: int | None = None


def _init(root: str, config: bytes, master: bytes | None, target: str) -> None:
    global _repo, _fd
    key = MasterKey(master[:32], master[32:]) if master else None
    _repo = Repository(FilesystemBackend(root), Config.from_json(config), key)
    _fd = os.open(target, os.O_WRONLY)


def _restore(windows: list[_WorkOrder], device: bool) -> tuple[int, int]:
    from storage.engine.reader import _write_sparse

    assert _repo is not None and _fd is not None
    written = covered = 0
    for entries in windows:
        chunks: dict[bytes, bytes] = {}
        for offset, length, chunk_offset, digest in entries:
            if digest not in chunks:
                chunks[digest] = _repo.get_chunk(digest)
            view = memoryview(chunks[digest])[chunk_offset : chunk_offset + length]
            if device:
                os.pwrite(_fd, view, offset)
                written += length
            else:
                written += _write_sparse(_fd, view, offset)
            covered += length
    return written, covered


def _batches(windows: Iterable[list[Entry]], size: int) -> Iterator[list[_WorkOrder]]:
    batch: list[_WorkOrder] = []
    for entries in windows:
        batch.append([(e.offset, e.length, e.chunk_offset, e.digest) for e in entries])
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def restore_windows(
    repo: Repository,
    windows: Iterable[list[Entry]],
    target: str,
    *,
    device: bool,
    processes: int,
    total: int,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Restore the given windows with ``processes`` workers; returns bytes written."""
    assert isinstance(repo.backend, FilesystemBackend)
    master = repo._master.raw() if repo._master else None
    context = multiprocessing.get_context("spawn")  # no fork of a threaded (worker) process
    written = done = 0
    with ProcessPoolExecutor(
        processes,
        mp_context=context,
        initializer=_init,
        initargs=(str(repo.backend.root), repo.config.to_json(), master, target),
    ) as pool:
        pending = []
        for batch in _batches(windows, 8):
            pending.append(pool.submit(_restore, batch, device))
            if len(pending) >= processes * 3:  # bounded: memory stays flat
                n, c = pending.pop(0).result()
                written, done = written + n, done + c
                if progress:
                    progress(done, total)
        for future in pending:
            n, c = future.result()
            written, done = written + n, done + c
            if progress:
                progress(done, total)
    return written
