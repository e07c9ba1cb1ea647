"""Restore with worker processes: each opens the repository itself and writes its windows
straight into the target, so only small work orders cross process boundaries.

Only on request (``restore_disk(processes=N)``, filesystem repositories): since every per-chunk
step runs without the GIL (``decrypt_into``, not ``decrypt``, which holds it; direct writes, not
page-cache copies), threads restore as fast without a process start-up each (bench/README.md).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor

from storage.engine.directio import aligned_buffer
from storage.engine.fs import FilesystemBackend
from storage.engine.index import Entry
from storage.engine.keys import MasterKey
from storage.engine.reader import WindowFiller, write_window
from storage.engine.repository import Config, Repository
from storage.engine.target import Target

_WorkOrder = list[tuple[int, int, int, bytes]]  # (offset, length, chunk_offset, digest)
_worker: tuple[WindowFiller, Target, memoryview] | None = None


def _init(root: str, config: bytes, master: bytes | None, target: str) -> None:
    global _worker
    key = MasterKey(master[:32], master[32:]) if master else None
    repo = Repository(FilesystemBackend(root), Config.from_json(config), key)
    # The target is closed with the process.
    _worker = WindowFiller(repo), Target(target), aligned_buffer(repo.config.chunk_size)


def _restore(windows: list[_WorkOrder]) -> tuple[int, int, int]:
    """(bytes written, bytes covered, chunks read) of a batch of windows."""
    assert _worker is not None
    filler, out, window = _worker
    written = covered = chunks = 0
    for orders in windows:
        entries = [Entry(*order) for order in orders]
        base, runs, read = filler.fill(entries, window)
        written += write_window(out, window, base, runs)
        chunks += read
        covered += sum(e.length for e in entries)
    return written, covered, chunks


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
    processes: int,
    total: int,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[int, int]:
    """Restore the given windows with ``processes`` workers; (bytes written, chunks read)."""
    assert isinstance(repo.backend, FilesystemBackend)
    master = repo._master.raw() if repo._master else None
    context = multiprocessing.get_context("spawn")  # no fork of a threaded (worker) process
    written = done = chunks = 0
    with ProcessPoolExecutor(
        processes,
        mp_context=context,
        initializer=_init,
        initargs=(str(repo.backend.root), repo.config.to_json(), master, target),
    ) as pool:
        pending = []
        for batch in _batches(windows, 8):
            pending.append(pool.submit(_restore, batch))
            if len(pending) >= processes * 3:  # bounded: memory stays flat
                n, c, k = pending.pop(0).result()
                written, done, chunks = written + n, done + c, chunks + k
                if progress:
                    progress(done, total)
        for future in pending:
            n, c, k = future.result()
            written, done, chunks = written + n, done + c, chunks + k
            if progress:
                progress(done, total)
    return written, chunks
