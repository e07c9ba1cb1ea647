"""Repository pages: the list, a new repository, one repository with its restore points and its
maintenance jobs. Every read goes through ``restrict``; every write through storage.services."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from backupconsole.errors import ActionRefused
from backupconsole.permissions import may
from frontend.htmx import is_partial
from frontend.pages.repositories.forms import (
    CopyForm,
    GcForm,
    JobForm,
    PruneForm,
    RepositoryForm,
    VerifyForm,
)
from frontend.templatetags.console_tags import console_url
from jobs.choices import RunKind
from jobs.models import JobRun, ProtectionPolicy
from storage import services
from storage.filtersets import RepositoryFilterSet, RestorePointFilterSet
from storage.models import Repository, RestorePoint
from storage.usage import usage_of, with_usage

POINTS_PER_PAGE = 25
RECENT_RUNS = 10
MAINTENANCE_KINDS = (RunKind.VERIFY, RunKind.PRUNE, RunKind.GC, RunKind.COPY)


def _allowed(user: Any, action: str, model: type[Any], pk: int) -> bool:
    return bool(model.objects.restrict(user, action).filter(pk=pk).exists())


def _viewable(request: HttpRequest, pk: int) -> Repository:
    return get_object_or_404(Repository.objects.restrict(request.user, "view"), pk=pk)


# --- list ----------------------------------------------------------------------------------------


@login_required
def repository_list(request: HttpRequest) -> HttpResponse:
    if not may(request.user, "view", Repository):
        raise PermissionDenied
    filterset = RepositoryFilterSet(
        request.GET, queryset=Repository.objects.restrict(request.user, "view")
    )
    context = {
        "filter": filterset,
        "rows": usage_of(with_usage(filterset.qs)),
        "filtered": any(request.GET.get(name) for name in filterset.form.fields),
        "may_add": may(request.user, "add", Repository),
    }
    if is_partial(request):
        return render(request, "frontend/repositories/_table.html", context)
    return render(request, "frontend/repositories/list.html", context)


# --- new -----------------------------------------------------------------------------------------


@login_required
def repository_new(request: HttpRequest) -> HttpResponse:
    if not may(request.user, "add", Repository):
        raise PermissionDenied
    form = RepositoryForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            repository = services.create_repository(
                data=form.service_data(),
                secret=form.cleaned_data["secret"],
                passphrase=form.cleaned_data["passphrase"],
                acting_user=request.user,
            )
        except ActionRefused as refused:
            form.add_error(refused.field if refused.field in form.fields else None, refused.message)
        else:
            messages.success(request, f"Repository {repository.name} is ready.")
            return redirect("frontend:repository", pk=repository.pk)
    return render(request, "frontend/repositories/form.html", {"form": form})


# --- one repository ------------------------------------------------------------------------------


def _points(request: HttpRequest, repository: Repository) -> dict[str, Any]:
    """The repository's restore points the user may view, filtered (by VM, state) and paged."""
    points = (
        RestorePoint.objects.restrict(request.user, "view")
        .filter(repository=repository)
        .select_related("vm")
    )
    filterset = RestorePointFilterSet(request.GET, queryset=points)
    page = Paginator(filterset.qs.order_by("-created_at", "-id"), POINTS_PER_PAGE).get_page(
        request.GET.get("page")
    )
    shown = [point.pk for point in page]
    user = request.user
    return {
        "points_filter": filterset,
        "page": page,
        "vm_choices": points.exclude(vm=None)
        .order_by("vm_name")
        .values_list("vm_id", "vm_name")
        .distinct(),
        "deletable": set(
            RestorePoint.objects.restrict(user, "delete")
            .filter(pk__in=shown)
            .values_list("pk", flat=True)
        ),
        # The restore right also lets a user protect a point from pruning (as the API does).
        "restorable": set(
            RestorePoint.objects.restrict(user, "restore")
            .filter(pk__in=shown)
            .values_list("pk", flat=True)
        ),
        "now": timezone.now(),
        "selected_vm": request.GET.get("vm", ""),
        "selected_state": request.GET.get("state", ""),
    }


JOB_FORMS: dict[str, type[JobForm]] = {
    RunKind.VERIFY: VerifyForm,
    RunKind.PRUNE: PruneForm,
    RunKind.GC: GcForm,
    RunKind.COPY: CopyForm,
}


def _job_choices(kind: str, repository: Repository, user: Any) -> QuerySet[Any] | None:
    """What a job's select offers: prune one of the policies writing here; copy to another
    repository. Only rows the user may view."""
    if kind == RunKind.PRUNE:
        return ProtectionPolicy.objects.restrict(user, "view").filter(repository=repository)
    if kind == RunKind.COPY:
        return Repository.objects.restrict(user, "view").exclude(pk=repository.pk)
    return None


def _job_form(kind: str, repository: Repository, user: Any, data: Any = None) -> JobForm:
    choices = _job_choices(kind, repository, user)
    return JOB_FORMS[kind](data, prefix=kind, choices=choices)


def _job_forms(repository: Repository, user: Any) -> dict[str, JobForm]:
    """The forms the maintenance card shows (GC has no options): verify_form, prune_form, …"""
    return {
        f"{kind}_form": _job_form(kind, repository, user)
        for kind in (RunKind.VERIFY, RunKind.PRUNE, RunKind.COPY)
    }


@login_required
def repository_detail(request: HttpRequest, pk: int) -> HttpResponse:
    repository = get_object_or_404(
        with_usage(Repository.objects.restrict(request.user, "view")), pk=pk
    )
    points = _points(request, repository)
    if is_partial(request):
        return render(
            request,
            "frontend/repositories/_points.html",
            {"repository": repository, **points},
        )
    may_run = _allowed(request.user, "run", Repository, repository.pk)
    context = {
        "repository": repository,
        "usage": usage_of([repository])[0],
        **points,
        "may_run": may_run,
        "runs": JobRun.objects.restrict(request.user, "view")
        .filter(repository=repository, kind__in=MAINTENANCE_KINDS)
        .select_related("requested_by")[:RECENT_RUNS],
        **(_job_forms(repository, request.user) if may_run else {}),
    }
    return render(request, "frontend/repositories/detail.html", context)


# --- actions -------------------------------------------------------------------------------------


@login_required
@require_POST
def repository_job(request: HttpRequest, pk: int, kind: str) -> HttpResponse:
    """Starts a verify, prune, GC or copy run and shows its live page."""
    repository = _viewable(request, pk)
    if kind not in JOB_FORMS:
        raise Http404("No such repository job.")
    if not _allowed(request.user, "run", Repository, repository.pk):
        raise PermissionDenied
    form = _job_form(kind, repository, request.user, request.POST)
    if not form.is_valid():
        problems = "; ".join(str(e) for errors in form.errors.values() for e in errors)
        messages.error(request, f"{RunKind(kind).label} not started: {problems}")
        return redirect("frontend:repository", pk=repository.pk)
    try:
        run = services.start_repository_job(
            repository, kind=kind, options=form.options(), acting_user=request.user
        )
    except ActionRefused as refused:
        messages.error(request, refused.message)
        return redirect("frontend:repository", pk=repository.pk)
    messages.success(request, f"{run.get_kind_display()} run #{run.pk} queued.")
    return redirect(console_url("run", run.pk) or reverse("frontend:repository", args=[pk]))


def _point(request: HttpRequest, pk: int, point_pk: int, action: str) -> RestorePoint:
    """A restore point of repository ``pk`` the user may view (404), and may act on (403)."""
    point = get_object_or_404(
        RestorePoint.objects.restrict(request.user, "view").select_related("repository", "vm"),
        pk=point_pk,
        repository_id=pk,
    )
    if not _allowed(request.user, action, RestorePoint, point.pk):
        raise PermissionDenied
    return point


@login_required
@require_POST
def restore_point_protect(request: HttpRequest, pk: int, point_pk: int) -> HttpResponse:
    """Protects a restore point from retention, or lifts that (the "restore" action, as in the
    API)."""
    point = _point(request, pk, point_pk, "restore")
    protected = request.POST.get("protected") == "true"
    services.set_restore_point_protected(point, protected=protected, acting_user=request.user)
    state = "protected from retention" if protected else "no longer protected"
    messages.success(request, f"Restore point {point} is {state}.")
    return redirect("frontend:repository", pk=pk)


@login_required
def restore_point_delete(request: HttpRequest, pk: int, point_pk: int) -> HttpResponse:
    """GET: what would go, and a confirm button; POST: delete it."""
    point = _point(request, pk, point_pk, "delete")
    if request.method == "POST":
        try:
            services.delete_restore_point(point, acting_user=request.user)
        except ActionRefused as refused:
            messages.error(request, refused.message)
        else:
            messages.success(
                request,
                f"Restore point {point} deleted; the next garbage collection frees its data.",
            )
        return redirect("frontend:repository", pk=pk)
    return render(request, "frontend/repositories/delete_point.html", {"point": point})
