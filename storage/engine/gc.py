"""Garbage collection: mark everything reachable from a manifest, sweep the rest that is older
than the cutoff (docs/repository-format.md, "Writers and garbage collection")."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from storage.engine.backend import ObjectLocked, ObjectMissing
from storage.engine.index import ZERO_DIGEST
from storage.engine.repository import Repository, RepositoryError

GRACE = timedelta(hours=1)
STALE_WRITER = timedelta(hours=48)
STALE_LOCK = timedelta(hours=24)
LOCK_KEY = "locks/maintenance"


@contextmanager
def maintenance_lock(repo: Repository, operation: str) -> Iterator[None]:
    """Prune and GC exclude each other (one at a time per repository)."""
    document = {"operation": operation, "host": socket.gethostname(), "since": _now().isoformat()}
    if not repo.backend.put(LOCK_KEY, json.dumps(document).encode()):
        try:
            held = json.loads(repo.backend.get(LOCK_KEY))
        except ObjectMissing:
            held = None
        if held and _now() - datetime.fromisoformat(held["since"]) < STALE_LOCK:
            raise RepositoryError(
                f"{held['operation']} is already running on {held['host']} since {held['since']}"
            )
        repo.backend.put(LOCK_KEY, json.dumps(document).encode(), if_absent=False)
    try:
        yield
    finally:
        repo.backend.delete(LOCK_KEY)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class GcResult:
    points: int = 0
    marked: int = 0
    swept_objects: int = 0
    swept_bytes: int = 0
    kept_young: int = 0
    kept_locked: int = 0
    cutoff: datetime | None = None


def cutoff_time(repo: Repository, started: datetime) -> datetime:
    oldest = started
    for writer in repo.writers():
        began = datetime.fromisoformat(writer["started"])
        if started - began < STALE_WRITER:
            oldest = min(oldest, began)
    return oldest - GRACE


def mark(repo: Repository) -> tuple[set[bytes], int]:
    """Every digest reachable from a manifest. Refuses (raises) if any manifest is unreadable:
    sweeping without knowing what it references could delete live data."""
    marked: set[bytes] = set()
    keys = repo.manifest_keys()
    for key in keys:
        manifest = repo.read_manifest(key)
        for disk in manifest.disks:
            index_digest = bytes.fromhex(disk.index)
            marked.add(index_digest)
            for page in repo.disk_index(disk.index).pages:
                if page == ZERO_DIGEST or page in marked:
                    continue  # a page seen before: its chunks are marked already
                marked.add(page)
                marked.update(entry.digest for entry in repo.page(page))
    return marked, len(keys)


def collect_garbage(
    repo: Repository, *, dry_run: bool = False, now: datetime | None = None
) -> GcResult:
    started = now or _now()
    with maintenance_lock(repo, "garbage collection"):
        # The cutoff is taken before marking: a writer registering after this point writes
        # and touches only objects younger than it.
        result = GcResult(cutoff=cutoff_time(repo, started))
        marked, result.points = mark(repo)
        result.marked = len(marked)
        assert result.cutoff is not None
        for prefix in ("chunks/", "indexes/"):
            for info in repo.backend.list(prefix):
                digest = bytes.fromhex(info.key.rsplit("/", 1)[-1])
                if digest in marked:
                    continue
                if info.modified >= result.cutoff:
                    result.kept_young += 1
                    continue
                try:
                    if repo.backend.stat(info.key).modified >= result.cutoff:
                        result.kept_young += 1  # touched by a writer since the listing
                        continue
                    if not dry_run:
                        repo.backend.delete(info.key)
                except ObjectMissing:
                    continue
                except ObjectLocked:
                    result.kept_locked += 1
                    continue
                result.swept_objects += 1
                result.swept_bytes += info.size
        if not dry_run:
            repo.backend.put(
                "gc/last",
                json.dumps(
                    {
                        "finished": _now().isoformat(),
                        "swept_objects": result.swept_objects,
                        "swept_bytes": result.swept_bytes,
                    }
                ).encode(),
                if_absent=False,
            )
    return result
