"""Repository jobs run as runs (verify, prune, garbage collection), with progress and a log."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from inventory.models import Proxy
from jobs.choices import LogLevel, RunKind, RunResult, RunState
from jobs.models import JobRun, ProtectionPolicy
from jobs.progress import Throttle, publish_run
from jobs.runstate import begin, cancelled, finish, log, set_state
from storage.catalog import import_catalog, record_manifest
from storage.choices import RestorePointState
from storage.engine.copy import copy_point
from storage.engine.gc import collect_garbage
from storage.engine.prune import Mark
from storage.engine.repository import Repository as EngineRepository
from storage.engine.retention import prune_vm
from storage.engine.verify import ChunkChecker, verify_point
from storage.engine_access import open_repository
from storage.models import Repository, RestorePoint
from storage.retention import policy_vm_keys, retention_of


def execute_run(run_pk: int, *, proxy: Proxy | None = None) -> None:
    run = begin(run_pk, proxy)
    if run is None:
        return
    repository = run.repository
    if repository is None:
        with transaction.atomic():
            finish(run, RunResult.FAILED, "The repository was deleted before the run started.")
        return
    try:
        engine = open_repository(repository)
        with transaction.atomic():
            set_state(run, RunState.WORKING)
        jobs = {
            RunKind.VERIFY: _verify,
            RunKind.GC: _gc,
            RunKind.PRUNE: _prune,
            RunKind.COPY: _copy,
        }
        jobs[RunKind(run.kind)](run, repository, engine)
    except Exception as exc:  # the run must end with the reason, whatever went wrong
        with transaction.atomic():
            log(run, f"{type(exc).__name__}: {exc}", level=LogLevel.ERROR)
            finish(run, RunResult.FAILED, f"{run.get_kind_display()} failed: {exc}")


def _progress(
    run: JobRun, throttle: Throttle, done: int, total: int, *, force: bool = False
) -> None:
    if not throttle.ready(force=force):
        return
    JobRun.objects.filter(pk=run.pk).update(bytes_done=done, bytes_total=total)
    publish_run(run.pk)


def _verify(run: JobRun, repository: Repository, engine: EngineRepository) -> None:
    deep = bool(run.options.get("deep"))
    added, _ = import_catalog(repository, engine)
    if added:
        log(run, f"{added} restore point(s) found in the repository were added to the catalog.")
    points = RestorePoint.objects.filter(repository=repository).order_by("created_at")
    if run.options.get("restore_point"):
        points = points.filter(pk=run.options["restore_point"])
    checker = ChunkChecker(engine, deep=deep)
    total = sum(p.logical_bytes for p in points)
    throttle, base, corrupt = Throttle(1.0), 0, 0
    for point in points:
        if cancelled(run):
            break

        def report(done: int, _total: int, offset: int = base) -> None:
            _progress(run, throttle, offset + done, total)

        result = verify_point(engine, point.manifest_path, checker, progress=report)
        base += point.logical_bytes
        ranges = {p.device_key: p.ranges for p in result.problems}
        for disk in point.disks.all():
            disk.corrupt_ranges = [list(r) for r in ranges.get(disk.device_key, [])]
            disk.save(update_fields=["corrupt_ranges"])
        if result.ok:
            point.state, point.verify_error = RestorePointState.VERIFIED, ""
        else:
            corrupt += 1
            reasons = [result.manifest_error] + [r for p in result.problems for r in p.reasons]
            point.state = RestorePointState.CORRUPT
            point.verify_error = "; ".join(r for r in reasons if r)[:2000]
            log(run, f"{point}: {point.verify_error}", level=LogLevel.ERROR)
        point.verified_at = timezone.now()
        point.save(update_fields=["state", "verify_error", "verified_at"])
    _progress(run, throttle, total, total, force=True)
    mode = "Deep" if deep else "Fast"
    with transaction.atomic():
        if cancelled(run):
            finish(run, RunResult.CANCELLED, f"Cancelled by a user; {corrupt} corrupt so far.")
        elif corrupt:
            finish(run, RunResult.FAILED, f"{mode} verify: {corrupt} of {points.count()} corrupt.")
        else:
            finish(
                run, RunResult.SUCCEEDED, f"{mode} verify: {points.count()} restore point(s) ok."
            )


def _gc(run: JobRun, repository: Repository, engine: EngineRepository) -> None:
    result = collect_garbage(engine)
    used = sum(info.size for info in engine.backend.list(""))
    Repository.objects.filter(pk=repository.pk).update(
        used_bytes=used, usage_updated_at=timezone.now()
    )
    with transaction.atomic():
        log(run, f"Marked {result.marked} objects of {result.points} restore point(s).")
        finish(
            run,
            RunResult.SUCCEEDED,
            f"Removed {result.swept_objects} unreferenced object(s), "
            f"{result.swept_bytes} bytes; {result.kept_young} too young to remove.",
        )


def prune_policy(
    run: JobRun, policy: ProtectionPolicy, engine: EngineRepository | None = None
) -> int:
    """Apply one policy's retention in its repository; returns how many points went."""
    repository = policy.repository
    engine = engine or open_repository(repository)
    rules = retention_of(policy)
    removed = 0
    for vm_key in policy_vm_keys(policy):
        protected = set(
            RestorePoint.objects.filter(
                repository=repository, vm_key=vm_key, protected=True
            ).values_list("point_id", flat=True)
        )
        decisions = prune_vm(engine, vm_key, rules, now=timezone.now(), protected=protected)
        gone = [d.point.id for d in decisions if d.mark == Mark.REMOVE]
        RestorePoint.objects.filter(repository=repository, point_id__in=gone).delete()
        removed += len(gone)
        if gone:
            log(run, f"{policy.name} / {vm_key}: retention removed {len(gone)} restore point(s).")
    return removed


def _prune(run: JobRun, repository: Repository, engine: EngineRepository) -> None:
    policies = ProtectionPolicy.objects.filter(repository=repository)
    if run.options.get("policy"):
        policies = policies.filter(pk=run.options["policy"])
    removed = sum(prune_policy(run, policy, engine) for policy in policies)
    with transaction.atomic():
        finish(
            run,
            RunResult.SUCCEEDED,
            f"Pruned {removed} restore point(s); the next garbage collection frees their data.",
        )


def copy_points(
    run: JobRun, source: Repository, target: Repository, points: list[RestorePoint]
) -> tuple[int, int]:
    """Copy the points the target lacks, sending only chunks it lacks. (copied, bytes sent)"""
    engine, target_engine = open_repository(source), open_repository(target)
    present = set(target.restore_points.values_list("point_id", flat=True))
    todo = [p for p in points if p.point_id not in present]
    total = sum(p.logical_bytes for p in todo)
    throttle, base, sent, copied = Throttle(1.0), 0, 0, 0
    for point in todo:
        if cancelled(run):
            break
        manifest = engine.read_manifest(point.manifest_path)

        def report(done: int, _total: int, offset: int = base) -> None:
            _progress(run, throttle, offset + done, total)

        result = copy_point(engine, target_engine, manifest, progress=report)
        record_manifest(target, target_engine.read_manifest(manifest.key), vm=point.vm)
        base += point.logical_bytes
        sent += result.bytes_sent
        copied += 1
        log(run, f"{point}: {result.chunks_sent} chunk(s) sent, {result.chunks_present} present.")
    _progress(run, throttle, total, total, force=True)
    return copied, sent


def copy_new_points(run: JobRun, policy: ProtectionPolicy) -> None:
    """After a backup: the run's new restore points go to the policy's secondary repository."""
    assert policy.copy_repository is not None
    points = list(RestorePoint.objects.filter(run=run))
    copied, sent = copy_points(run, policy.repository, policy.copy_repository, points)
    log(
        run, f"Secondary copy: {copied} restore point(s) to {policy.copy_repository}, {sent} bytes."
    )


def _copy(run: JobRun, repository: Repository, engine: EngineRepository) -> None:
    """Secondary copy (AuxCopy) as its own run."""
    target = Repository.objects.get(pk=run.options["target"])
    points = RestorePoint.objects.filter(repository=repository).order_by("created_at")
    if run.options.get("restore_point"):
        points = points.filter(pk=run.options["restore_point"])
    copied, sent = copy_points(run, repository, target, list(points))
    with transaction.atomic():
        if cancelled(run):
            finish(run, RunResult.CANCELLED, f"Cancelled by a user after {copied} point(s).")
            return
        finish(
            run,
            RunResult.SUCCEEDED,
            f"Copied {copied} restore point(s) to {target.name} ({sent} bytes sent).",
        )
