"""One step of our engine in its own process, so its peak RSS can be read from ``os.wait4``.

    python -m bench.ours_step init    REPO [ZSTD_LEVEL]
    python -m bench.ours_step full    REPO IMAGE [HEAD_BYTES]   (only the image's first bytes)
    python -m bench.ours_step incr    REPO IMAGE PARENT_ID EXTENTS_JSON
    python -m bench.ours_step restore REPO POINT_ID TARGET

Prints one JSON line: the step's own seconds (without interpreter start-up) and what it did.
Run from the repository root, so ``storage`` imports.
"""

from __future__ import annotations

import json
import sys
import threading
import time

from storage.engine.fs import FilesystemBackend
from storage.engine.reader import restore_disk
from storage.engine.repository import Repository
from storage.engine.source import FileSource
from storage.engine.writer import DiskInput, Progress, write_restore_point

PASSPHRASE = "bench"  # noqa: S105 (throw-away benchmark repositories)
VM_KEY, VM_NAME = "bench-vm", "bench"


class _Head(FileSource):
    """The first ``size`` bytes of an image, as a disk of its own."""

    def __init__(self, path: str, size: int) -> None:
        super().__init__(path)
        self.size = min(size, self.size)

    def allocated(self) -> list[tuple[int, int]]:
        return [(s, min(e, self.size)) for s, e in super().allocated() if s < self.size]


class _RssSampler(threading.Thread):
    """What the resident memory was made of at its peak, sampled from /proc every 20 ms: the
    heap (anonymous), the engine's aligned buffers (shared anonymous maps, ``directio``) and
    mapped files (libraries). ``ru_maxrss`` gives only the sum."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = {"rss_mib": 0.0, "anon_mib": 0.0, "buffers_mib": 0.0, "file_mib": 0.0}
        self.stopped = threading.Event()

    def sample(self) -> None:
        fields = {}
        with open("/proc/self/status") as status:
            for line in status:
                name, _, value = line.partition(":")
                if name in ("VmRSS", "RssAnon", "RssShmem", "RssFile"):
                    fields[name] = int(value.split()[0]) / 1024
        if fields.get("VmRSS", 0.0) > self.peak["rss_mib"]:
            self.peak = {
                "rss_mib": fields["VmRSS"],
                "anon_mib": fields.get("RssAnon", 0.0),
                "buffers_mib": fields.get("RssShmem", 0.0),
                "file_mib": fields.get("RssFile", 0.0),
            }

    def run(self) -> None:
        while not self.stopped.wait(0.02):
            self.sample()


def _open(repo_dir: str) -> Repository:
    return Repository.open(FilesystemBackend(repo_dir), passphrase=PASSPHRASE)


def main(argv: list[str]) -> dict[str, object]:
    step, repo_dir, *rest = argv
    if step == "init":
        level = int(rest[0]) if rest else 3
        backend = FilesystemBackend(repo_dir)
        Repository.init(backend, passphrase=PASSPHRASE, encryption=True, compression_level=level)
        return {}
    repo = _open(repo_dir)
    last: dict[str, Progress] = {}

    def progress(p: Progress) -> None:
        last["p"] = p

    t0 = time.perf_counter()
    if step == "restore":
        point_id, target = rest
        restore_disk(repo, repo.find(point_id), "vda", target)
        return {"seconds": time.perf_counter() - t0}
    head = None
    if step == "full":
        image, *limit = rest
        parent, extents = None, None
        head = int(limit[0]) if limit else None
    elif step == "incr":
        image, parent_id, extents_path = rest
        with open(extents_path) as f:
            extents = [(int(o), int(n)) for o, n in json.load(f)["extents"]]
        parent = repo.find(parent_id)
    else:
        raise SystemExit(f"unknown step {step!r}")
    with FileSource(image) if head is None else _Head(image, head) as source:
        disk = DiskInput(device_key="vda", source=source, changed_extents=extents)
        point = write_restore_point(
            repo, vm_key=VM_KEY, vm_name=VM_NAME, parent=parent, disks=[disk], progress=progress
        )
    seconds = time.perf_counter() - t0
    p = last.get("p")
    return {
        "seconds": seconds,
        "id": point.id,
        "read_bytes": point.stats.read_bytes,
        "stored_bytes": point.stats.stored_bytes,
        # The writer's own split: reading (main thread); hashing, compression and encryption;
        # backend writes (each of the last two averaged over its worker threads).
        "busy": {"read": p.read_seconds, "process": p.process_seconds, "store": p.store_seconds}
        if p
        else {},
    }


if __name__ == "__main__":
    sampler = _RssSampler()
    sampler.start()
    doc = main(sys.argv[1:])
    sampler.stopped.set()
    sampler.join()
    sampler.sample()
    print(json.dumps({**doc, "memory": sampler.peak}))
