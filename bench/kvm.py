"""Issue 4's benchmark: the benchmark's disk as a qcow2 on a running QEMU, backed up through
libvirt (pull-mode backup + checkpoints), our NBD client and the storage engine; then 2 %
scattered guest writes and an incremental backup from the dirty bitmap.

    python -m bench.kvm [--work DIR] [--size-gib 4] [--seed 1]

No Django: the connector (``inventory.kvm.connector``) and the engine are called directly, the way
``jobs/backup.py`` calls them. Needs root, libvirtd, QEMU and libvirt-python (``.ci/kvm-packages``);
when something is missing, :func:`missing` says what and the section is skipped.

Figures (``results.json`` under ``"kvm"``): ``full_gib_s`` (logical disk size / wall seconds of the
whole full backup, snapshot included), ``incr_s`` (wall seconds of the whole incremental, snapshot
included), ``incr_read_share`` (bytes the incremental read / disk size) and
``snapshot_overhead_s`` (backup job + checkpoint create and remove, measured on the full backup;
the incremental's own is in the details).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bench import diskgen, images
from bench.measure import StepFailed, sha256_file
from inventory.kvm import libvirt_env
from storage.engine.fs import FilesystemBackend
from storage.engine.reader import restore_disk
from storage.engine.repository import Repository
from storage.engine.writer import DiskInput, write_restore_point

GiB = 1 << 30
PASSPHRASE = "bench"  # noqa: S105 (throw-away benchmark repository)
DOMAIN = "bench-kvm"
KEYS = ("full_gib_s", "incr_s", "incr_read_share", "snapshot_overhead_s")


def _say(text: str) -> None:
    print(text, flush=True)


def missing() -> list[str]:
    """What this machine lacks to run the KVM benchmark (empty: all there)."""
    return libvirt_env.missing_requirements()


def _qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True)  # noqa: S603, S607 (fixed argv)


def base_qcow2(imgs: images.Images) -> Path:
    """The base image as qcow2, converted once and cached next to it."""
    out = imgs.base.with_name("base.qcow2")
    stamp = out.with_name("base.qcow2.sha256")
    if out.exists() and stamp.exists() and stamp.read_text().strip() == imgs.base_sha256:
        return out
    _say(f"converting {imgs.base} to qcow2 ...")
    t0 = time.perf_counter()
    partial = out.with_name("base.qcow2.partial")
    _qemu_img("convert", "-q", "-f", "raw", "-O", "qcow2", str(imgs.base), str(partial))
    partial.rename(out)
    stamp.write_text(imgs.base_sha256 + "\n")
    _say(f"  qcow2: {time.perf_counter() - t0:.1f} s")
    return out


@contextmanager
def _domain(work: Path, disk: Path) -> Iterator[tuple[Any, Any, str, str]]:
    """A private libvirtd with one running domain on ``disk``: (env, domain, target, alias)."""
    root = Path(tempfile.mkdtemp(prefix="libvirt-", dir=work))
    try:
        with libvirt_env.LocalLibvirt(root) as env:
            conn = env.open()
            dom = None
            try:
                dom = libvirt_env.define_test_domain(conn, DOMAIN, [disk], work, start=True)
                (disk_info,) = libvirt_env.domain_disks(dom)
                yield env, dom, disk_info.target, disk_info.alias
            finally:
                if dom is not None:
                    libvirt_env.remove_domain(dom)
                conn.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


class _Timed:
    """Wall seconds of one backup: create (entering the snapshot until the first read), the
    backup itself, and remove (leaving the snapshot)."""

    def __init__(self) -> None:
        self.total = self.create = self.backup = self.remove = 0.0


def _backup(
    connector: Any,
    connection: Any,
    vm: Any,
    repo: Repository,
    target: str,
    *,
    since: dict[str, str],
    parent: Any,
) -> tuple[Any, str, _Timed]:
    """One backup of the domain's disk: (manifest, change token, timings)."""
    timed = _Timed()

    def record(kind: str, data: dict[str, Any]) -> Callable[[], None]:
        return lambda: None  # nothing to sweep later: the daemon dies with the benchmark

    t0 = time.perf_counter()
    with connector.backup_snapshot(
        connection, vm, quiesce=False, record=record, since=since
    ) as snap:
        t1 = time.perf_counter()
        timed.create = t1 - t0
        disk = snap.disks[target]
        changed = None
        if parent is not None:
            changes = disk.changes_since(since[target])
            if not isinstance(changes, list):
                raise StepFailed(f"kvm: no change tracking for the incremental: {changes}")
            changed = changes
        manifest = write_restore_point(
            repo,
            vm_key="bench-kvm",
            vm_name=DOMAIN,
            disks=[
                DiskInput(target, disk.source(), changed_extents=changed, change_token=disk.token)
            ],
            parent=parent,
        )
        snap.keep_tracking()
        t2 = time.perf_counter()
        timed.backup = t2 - t1
    t3 = time.perf_counter()
    timed.remove = t3 - t2
    timed.total = t3 - t0
    return manifest, disk.token, timed


def _guest_writes(dom: Any, alias: str, extents: list[tuple[int, int]]) -> None:
    """The day-1 changed extents, written by the guest (one HMP ``qemu-io`` call each)."""
    for i, (offset, length) in enumerate(extents):
        libvirt_env.guest_write(dom, alias, offset, length, 1 + i % 255)
    libvirt_env.guest_flush(dom, alias)


def bench_kvm(work_dir: Path, imgs: images.Images) -> dict[str, Any]:
    """Run the KVM benchmark; returns the figures (``KEYS``) plus details (seconds, match)."""
    from inventory.kvm.connector import KVMConnector

    work = Path(work_dir) / "kvm"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        qcow2 = base_qcow2(imgs)
        disk = work / "disk.qcow2"
        diskgen.copy_sparse(qcow2, disk)
        repo_dir = work / "repo"
        backend = FilesystemBackend(str(repo_dir))
        repo = Repository.init(backend, passphrase=PASSPHRASE, encryption=True)
        extents = imgs.extents()
        with _domain(work, disk) as (env, dom, target, alias):
            connection = SimpleNamespace(address=str(env.socket_path), username="", port=22)
            vm = SimpleNamespace(external_id=dom.UUIDString(), name=dom.name())
            connector = KVMConnector()
            _say("kvm: full backup ...")
            full, token, tf = _backup(
                connector, connection, vm, repo, target, since={}, parent=None
            )
            _say(
                f"  {tf.total:.1f} s (snapshot create {tf.create:.2f} s, backup {tf.backup:.1f} s,"
                f" remove {tf.remove:.2f} s); read {full.stats.read_bytes / GiB:.2f} GiB"
            )
            _say(f"kvm: {len(extents)} guest writes ...")
            t0 = time.perf_counter()
            _guest_writes(dom, alias, extents)
            writes_s = time.perf_counter() - t0
            _say(f"  {writes_s:.1f} s")
            _say("kvm: incremental backup ...")
            incr, _token, ti = _backup(
                connector, connection, vm, repo, target, since={target: token}, parent=full
            )
            _say(
                f"  {ti.total:.2f} s (snapshot create {ti.create:.2f} s, backup {ti.backup:.2f} s,"
                f" remove {ti.remove:.2f} s); read {incr.stats.read_bytes / 2**20:.1f} MiB"
            )
            expected = work / "expected.raw"
            _qemu_img("convert", "-U", "-O", "raw", str(disk), str(expected))
        size = full.stats.logical_bytes
        restored = work / "restored.raw"
        t0 = time.perf_counter()
        restore_disk(repo, incr, target, restored)
        restore_s = time.perf_counter() - t0
        matched = sha256_file(restored) == sha256_file(expected)
        _say(
            f"kvm: incremental restore point {'MATCHES' if matched else 'DIFFERS FROM'} the disk"
            f" after the guest writes (sha256; restore {restore_s:.1f} s)"
        )
        return {
            "full_gib_s": size / GiB / tf.total,
            "incr_s": ti.total,
            "incr_read_share": incr.stats.read_bytes / size,
            "snapshot_overhead_s": tf.create + tf.remove,
            "incr_snapshot_overhead_s": ti.create + ti.remove,
            "restore_matched": matched,
            "size": size,
            "extents": len(extents),
            "seconds": {
                "full": tf.total,
                "full_snapshot_create": tf.create,
                "full_backup": tf.backup,
                "full_snapshot_remove": tf.remove,
                "guest_writes": writes_s,
                "incr": ti.total,
                "incr_snapshot_create": ti.create,
                "incr_backup": ti.backup,
                "incr_snapshot_remove": ti.remove,
                "restore": restore_s,
            },
            "read_bytes": {"full": full.stats.read_bytes, "incr": incr.stats.read_bytes},
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="KVM backup benchmark (issue 4) on its own")
    ap.add_argument("--work", type=Path, default=Path("/var/tmp/backupconsole-bench"))  # noqa: S108
    ap.add_argument("--size-gib", type=float, default=4)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    lacking = missing()
    if lacking:
        _say("kvm: skipped, missing: " + ", ".join(lacking))
        return 0
    size = int(args.size_gib * GiB) // (1 << 20) * (1 << 20)
    imgs = images.prepare(args.work, size, args.seed)
    from bench import report

    figures = bench_kvm(args.work, imgs)
    for line in report.kvm_lines(figures):
        _say(line)
    print(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
