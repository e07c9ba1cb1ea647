"""A VM's page (facts, disks, change tracking, policies, restore points), "Back up now" and,
for vSphere VMs, "Reset CBT"."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import NoReverseMatch, reverse
from django.views.decorators.http import require_POST

from backupconsole.errors import ActionRefused
from frontend.pages.inventory.access import allowed_pks, may_act, require, visible_or_404
from frontend.pages.inventory.tracking import (
    disk_health,
    disks_with_tracking,
    latest_points,
    read_kind,
    with_read_kind,
)
from inventory.models import VirtualMachine
from inventory.services import VSPHERE_KINDS, reset_change_tracking
from jobs.choices import Trigger
from jobs.models import ProtectionPolicy
from jobs.services import start_vm_backup
from storage.choices import RestorePointState
from storage.models import RestorePoint

# Restore points listed on the page, newest first; older ones are on the repository's page.
POINT_LIMIT = 50


def _vm(request: HttpRequest, pk: int) -> VirtualMachine:
    queryset = VirtualMachine.objects.with_latest_restore_point().select_related(
        "connection", "datacenter", "cluster", "host", "folder"
    )
    return visible_or_404(queryset, request.user, pk)


def _runnable_policies(request: HttpRequest, vm: VirtualMachine) -> list[ProtectionPolicy]:
    """The VM's protecting policies whose runs the user may start (the run checks this too)."""
    return list(
        ProtectionPolicy.objects.restrict(request.user, "run")
        .filter(members=vm)
        .only("id", "name")
        .order_by("name")
    )


@login_required
def vm_detail(request: HttpRequest, pk: int) -> HttpResponse:
    user = request.user
    vm = _vm(request, pk)
    latest = latest_points([vm], user).get(vm.pk)
    disks = list(disks_with_tracking(vm))
    for disk in disks:
        disk.health = disk_health(disk, latest)  # type: ignore[attr-defined]
    visible_points = RestorePoint.objects.restrict(user, "view").filter(vm=vm)
    newest_first = visible_points.select_related("repository").order_by("-created_at", "-id")
    points = list(with_read_kind(newest_first)[:POINT_LIMIT])
    restorable = allowed_pks(RestorePoint.objects.all(), [p.pk for p in points], user, "restore")
    for point in points:
        point.read_kind = read_kind(point)  # type: ignore[attr-defined]
        point.may_restore = (  # type: ignore[attr-defined]
            point.pk in restorable and point.state != RestorePointState.CORRUPT
        )
    may_run = may_act(user, vm, "run")
    context = {
        "vm": vm,
        "latest": latest,
        "disks": disks,
        "tags": list(vm.tags.all()),
        "policies": list(
            ProtectionPolicy.objects.restrict(user, "view").filter(members=vm).only("id", "name")
        ),
        "points": points,
        "point_total": visible_points.count() if len(points) >= POINT_LIMIT else len(points),
        "may_run": may_run,
        "backup_policies": _runnable_policies(request, vm) if may_run else [],
        "may_reset_cbt": vm.connection.kind in VSPHERE_KINDS and may_act(user, vm, "change"),
    }
    return render(request, "frontend/inventory/vm.html", context)


@login_required
@require_POST
def vm_backup(request: HttpRequest, pk: int) -> HttpResponse:
    """Back up this VM now with one of its policies; then the run's live page."""
    vm = _vm(request, pk)
    require(request.user, vm, "run")
    policies = {str(p.pk): p for p in _runnable_policies(request, vm)}
    chosen = request.POST.get("policy", "")
    if chosen and chosen not in policies:
        messages.error(request, "Choose one of the policies that protect this VM.")
        return redirect("frontend:vm", pk=pk)
    policy = policies.get(chosen) or next(iter(policies.values()), None)
    if policy is None:
        messages.error(request, "No policy you may run protects this VM: add it to a policy first.")
        return redirect("frontend:vm", pk=pk)
    try:
        run = start_vm_backup(vm, policy=policy, trigger=Trigger.MANUAL, acting_user=request.user)
    except ActionRefused as refused:
        messages.error(request, refused.message)
        return redirect("frontend:vm", pk=pk)
    messages.success(request, f"Backup of {vm.name} started (run #{run.pk}).")
    try:
        return redirect(reverse("frontend:run", args=[run.pk]))
    except NoReverseMatch:  # the runs pages are not there yet
        return redirect("frontend:vm", pk=pk)


@login_required
@require_POST
def vm_reset_cbt(request: HttpRequest, pk: int) -> HttpResponse:
    """Reset Changed Block Tracking (vSphere): the next backup reads the VM in full."""
    vm = _vm(request, pk)
    require(request.user, vm, "change")
    try:
        result = reset_change_tracking([vm], acting_user=request.user)[0]
    except ActionRefused as refused:
        messages.error(request, refused.message)
    else:
        (messages.success if result.ok else messages.error)(request, result.message)
    return redirect("frontend:vm", pk=pk)
