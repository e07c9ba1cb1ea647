"""`make bench`: our storage engine, restic and borg on the same generated disk, in one run.

    python -m bench.run [--work DIR] [--size-gib 4] [--seed 1] [--big-gib 16] [--skip-peers]
                        [--skip-kvm]

Prints a table (tool x figure), our ratios against each peer and the issue's targets, and writes
bench/results.json: {"storage": {...}, "restic": {...}, "borg": {...}, "kvm": {...}} ("kvm":
issue 4's backup of the same disk as a qcow2 on a running QEMU, see ``bench.kvm``; null when
skipped or when libvirt/QEMU are missing). Figures are printed, never asserted: a missed target
does not fail the run, a wrong restore (sha256) does.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from bench import images, kvm, report
from bench.measure import ToolRun
from bench.ours import ROOT, bench_ours, big_disk_rss
from bench.peers import PeerUnavailable, bench_peers, ensure_installed

KEYS = (
    "full_gib_s",
    "incr_s",
    "incr_read_share",
    "incr_repo_growth_bytes",
    "changed_bytes",
    "restore_gib_s",
    "peak_rss_mib",
)
GiB = 1 << 30


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/var/tmp/backupconsole-bench"))  # noqa: S108
    ap.add_argument("--size-gib", type=float, default=float(os.environ.get("BENCH_SIZE_GIB", "4")))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--big-gib",
        type=float,
        default=float(os.environ["BENCH_BIG_GIB"]) if "BENCH_BIG_GIB" in os.environ else None,
        help="size of the disk for the memory check (default 4x --size-gib: 16; 0 skips it)",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=int(os.environ.get("BENCH_REPEAT", "3")),
        help="full backups per tool, each into a new repository; the median is reported "
        "(default 3)",
    )
    ap.add_argument("--skip-peers", action="store_true", help="only our engine")
    ap.add_argument(
        "--skip-kvm", action="store_true", help="skip the KVM (libvirt + QEMU) benchmark"
    )
    ap.add_argument(
        "--zstd-level",
        type=int,
        default=1,
        help="our repository's compression level (default 1, the product's default)",
    )
    ap.add_argument("--output", type=Path, default=ROOT / "bench" / "results.json")
    return ap.parse_args(argv)


def _bytes(gib: float) -> int:
    return int(gib * GiB) // (1 << 20) * (1 << 20)


def _say(text: str) -> None:
    print(text, flush=True)


def _memory(steps: dict[str, dict[str, float]]) -> str:
    return ", ".join(
        f"{step} {m['rss_mib']:.0f} ({m['anon_mib']:.0f} + {m['buffers_mib']:.0f} + "
        f"{m['file_mib']:.0f})"
        for step, m in steps.items()
    )


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    size = _bytes(args.size_gib)
    big_size = _bytes(args.big_gib if args.big_gib is not None else 4 * args.size_gib)
    args.work.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(args.work).free
    _say(f"work dir {args.work} ({free / GiB:.0f} GiB free); {os.cpu_count()} CPUs")
    if not args.skip_peers:
        try:
            ensure_installed()  # before anything long: fail early and clearly
        except PeerUnavailable as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return 2
    imgs = images.prepare(args.work, size, args.seed)
    big = images.prepare(args.work, big_size, args.seed, day=False) if big_size else None
    _say(
        f"disk {size / GiB:g} GiB; day 1: {imgs.extent_count} extents, "
        f"{imgs.changed_bytes / 2**20:.1f} MiB changed ({imgs.changed_bytes / size:.2%})"
    )
    images.warm(imgs)  # the big disk may have pushed them out of the page cache
    run_dir = args.work / "run"
    runs: dict[str, ToolRun | None] = {"storage": None, "restic": None, "borg": None}
    t0 = time.perf_counter()
    _say("storage engine ...")
    runs["storage"] = bench_ours(imgs, run_dir, args.zstd_level, repeat=args.repeat)
    if not args.skip_peers:
        for peer in bench_peers(imgs, run_dir, say=_say, repeat=args.repeat):
            runs[peer.name] = peer
    results: dict[str, dict[str, float | int | None]] = {
        name: {key: (run.figures.get(key) if run else None) for key in KEYS}
        for name, run in runs.items()
    }
    kvm_details: dict[str, Any] | None = None
    if args.skip_kvm:
        _say("kvm: skipped (--skip-kvm)")
    elif lacking := kvm.missing():
        _say("kvm: skipped, this machine lacks: " + ", ".join(lacking))
    else:
        _say("KVM: libvirt + NBD + storage engine ...")
        kvm_details = kvm.bench_kvm(args.work, imgs)
    kvm_figures = {key: kvm_details[key] for key in kvm.KEYS} if kvm_details else None
    big_seconds: dict[str, float] = {}
    big_memory: dict[str, dict[str, float]] = {}
    head_rss: float | None = None
    if big is not None:
        _say(f"storage engine on the {big_size / GiB:g} GiB disk (memory) ...")
        rss16, head_rss, big_seconds, big_memory = big_disk_rss(big, run_dir, args.zstd_level)
        results["storage"]["peak_rss_16g_mib"] = rss16
    else:
        results["storage"]["peak_rss_16g_mib"] = None
    elapsed = time.perf_counter() - t0

    headers = {
        name: (f"{name} {run.version}" if run and name != "storage" else name)
        for name, run in runs.items()
    }
    _say("")
    _say(report.table(results, headers, big_size / GiB or 16))
    _say("")
    for line in report.kvm_lines(kvm_figures):
        _say(line)
    _say("")
    for name, run in runs.items():
        if run:
            steps = ", ".join(f"{k} {v:.1f}" for k, v in run.seconds.items())
            cpu = ", ".join(f"{k} {v:.1f}" for k, v in run.cpu.items())
            _say(f"{name}: {run.options}\n  seconds: {steps}\n  CPU seconds: {cpu}")
            if run.memory:
                _say("  peak RSS, MiB (heap + buffers + files): " + _memory(run.memory))
    if big_seconds:
        _say(
            f"storage, {big_size / GiB:g} GiB disk: full {big_seconds['whole full']:.1f} s, "
            f"restore {big_seconds['whole restore']:.1f} s; its first quarter alone: full "
            f"{big_seconds['head full']:.1f} s, restore {big_seconds['head restore']:.1f} s, "
            f"peak RSS {head_rss:.0f} MiB\n  peak RSS, MiB (heap + buffers + files): "
            + _memory(big_memory)
        )
    _say("")
    if not args.skip_peers:
        for line in report.ratio_lines(results):
            _say(line)
    _say("targets (2-core machine, same run):")
    for line in report.target_lines(results, big_size / GiB or 16, head_rss):
        _say(line)
    if size != 4 * GiB:
        _say(f"note: disk is {size / GiB:g} GiB, not the issue's 4 GiB")

    args.output.write_text(json.dumps({**results, "kvm": kvm_figures}, indent=2) + "\n")
    meta = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "size": size,
        "big_size": big_size,
        "seed": args.seed,
        "extents": imgs.extent_count,
        "elapsed_s": elapsed,
        "tools": {
            name: {
                "version": r.version,
                "options": r.options,
                "seconds": r.seconds,
                "cpu": r.cpu,
                "memory": r.memory,
            }
            for name, r in runs.items()
            if r
        },
        "big_seconds": big_seconds,
        "big_memory": big_memory,
        "peak_rss_big_head_mib": head_rss,
        "kvm": kvm_details,
        "results": results,
    }
    (args.work / "last-run.json").write_text(json.dumps(meta, indent=2) + "\n")
    _say(f"wrote {args.output} (details: {args.work / 'last-run.json'}); {elapsed:.0f} s")
    if kvm_details is not None and not kvm_details["restore_matched"]:
        print("bench: the KVM incremental restore point differs from the disk", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
