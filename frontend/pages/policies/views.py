"""Policies: the list (the API's FilterSet), the create/edit form with its live previews, run now
and enable/disable. Every rule lives in the jobs services and the API serializer."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from backupconsole.errors import ActionRefused
from backupconsole.permissions import may
from frontend.htmx import is_partial
from frontend.pages.policies.editor import PolicyEditor
from frontend.templatetags.console_tags import console_url
from inventory.models import Connection
from jobs import services
from jobs.choices import Trigger
from jobs.filtersets import ProtectionPolicyFilterSet
from jobs.models import JobRun, ProtectionPolicy
from jobs.schedules import known_timezones, next_fire
from storage.models import Repository

PAGE_SIZE = 25


def _annotated(queryset: QuerySet[ProtectionPolicy]) -> QuerySet[ProtectionPolicy]:
    """What a list row shows, in a fixed number of queries whatever the page size."""
    last = JobRun.objects.filter(policy=OuterRef("pk")).order_by("-created_at", "-id")
    return (
        queryset.select_related("repository")
        .prefetch_related("schedules")
        .annotate(
            vm_count=Count("members", distinct=True),
            last_run_id=Subquery(last.values("pk")[:1]),
            last_run_state=Subquery(last.values("state")[:1]),
            last_run_result=Subquery(last.values("result")[:1]),
            last_run_at=Subquery(last.values("created_at")[:1]),
        )
    )


def _next_run(policy: ProtectionPolicy, now: datetime) -> datetime | None:
    times = [
        next_fire(s.cron, s.timezone, now)
        for s in policy.schedules.all()  # prefetched
        if s.enabled
    ]
    return min(times) if times and policy.enabled else None


def _rows(request: HttpRequest, policies: list[ProtectionPolicy]) -> list[dict[str, Any]]:
    pks = [p.pk for p in policies]
    runnable = set(
        ProtectionPolicy.objects.restrict(request.user, "run")
        .filter(pk__in=pks)
        .values_list("pk", flat=True)
    )
    changeable = set(
        ProtectionPolicy.objects.restrict(request.user, "change")
        .filter(pk__in=pks)
        .values_list("pk", flat=True)
    )
    now = timezone.now()
    return [
        {
            "policy": p,
            "next_run": _next_run(p, now),
            "may_run": p.pk in runnable,
            "may_change": p.pk in changeable,
            "run_url": console_url("run", p.last_run_id) if p.last_run_id else "",  # type: ignore[attr-defined]
        }
        for p in policies
    ]


@login_required
def policy_list(request: HttpRequest) -> HttpResponse:
    if not may(request.user, "view", ProtectionPolicy):
        raise PermissionDenied("Your role does not include protection policies.")
    filterset = ProtectionPolicyFilterSet(
        request.GET, queryset=ProtectionPolicy.objects.restrict(request.user, "view")
    )
    filterset.form.fields["repository"].queryset = Repository.objects.restrict(request.user, "view")
    policies = _annotated(filterset.qs).order_by("name", "pk")
    page = Paginator(policies, PAGE_SIZE).get_page(request.GET.get("page"))
    filtered = any(request.GET.get(name) for name in filterset.form.fields)
    context = {
        "filterset": filterset,
        "page": page,
        "rows": _rows(request, list(page.object_list)),
        "filtered": filtered,
        "may_add": may(request.user, "add", ProtectionPolicy),
    }
    if not page.paginator.count and not filtered:
        context["has_connection"] = Connection.objects.exists()
        context["has_repository"] = Repository.objects.exists()
    partial = "_results" if is_partial(request) else "list"
    return render(request, f"frontend/policies/{partial}.html", context)


def _policy(request: HttpRequest, pk: int, action: str) -> ProtectionPolicy:
    """The policy if the user may see it (404 otherwise) and take ``action`` on it (403)."""
    policy = get_object_or_404(ProtectionPolicy.objects.restrict(request.user, "view"), pk=pk)
    if (
        action != "view"
        and not ProtectionPolicy.objects.restrict(request.user, action).filter(pk=pk).exists()
    ):
        raise PermissionDenied(f"Your role does not allow this ({action}) on {policy}.")
    return policy


def _form_page(
    request: HttpRequest, editor: PolicyEditor, *, policy: ProtectionPolicy | None, editable: bool
) -> HttpResponse:
    context = {
        **editor.context(),
        "policy": policy,
        "editable": editable,
        "may_run": policy is not None
        and ProtectionPolicy.objects.restrict(request.user, "run").filter(pk=policy.pk).exists(),
        "timezones": known_timezones(),
    }
    return render(request, "frontend/policies/form.html", context)


def _submit(request: HttpRequest, policy: ProtectionPolicy | None) -> HttpResponse | PolicyEditor:
    editor = PolicyEditor(request.user, policy=policy, data=request.POST)
    if request.POST.get("_add") in ("rule", "schedule"):
        return editor.with_row(request.POST["_add"])
    saved = editor.save()
    if saved is None:
        return editor
    messages.success(request, f"Policy {saved.name} saved.")
    return redirect("frontend:policy", pk=saved.pk)


@login_required
def policy_new(request: HttpRequest) -> HttpResponse:
    if not may(request.user, "add", ProtectionPolicy):
        raise PermissionDenied("Your role does not allow creating policies.")
    if request.method == "POST":
        result = _submit(request, None)
        if isinstance(result, HttpResponse):
            return result
        return _form_page(request, result, policy=None, editable=True)
    return _form_page(request, PolicyEditor(request.user), policy=None, editable=True)


@login_required
def policy_edit(request: HttpRequest, pk: int) -> HttpResponse:
    if request.method == "POST":
        policy = _policy(request, pk, "change")
        result = _submit(request, policy)
        if isinstance(result, HttpResponse):
            return result
        return _form_page(request, result, policy=policy, editable=True)
    policy = _policy(request, pk, "view")
    editable = ProtectionPolicy.objects.restrict(request.user, "change").filter(pk=pk).exists()
    return _form_page(
        request, PolicyEditor(request.user, policy=policy), policy=policy, editable=editable
    )


@login_required
@require_POST
def policy_run(request: HttpRequest, pk: int) -> HttpResponse:
    policy = _policy(request, pk, "run")
    try:
        run = services.start_run(policy, trigger=Trigger.MANUAL, acting_user=request.user)
    except ActionRefused as exc:
        messages.error(request, exc.message)
        if request.POST.get("from") == "list":
            return redirect("frontend:policies")
        return redirect("frontend:policy", pk=pk)
    url = console_url("run", run.pk)
    if url:
        return redirect(url)
    messages.success(request, f"Run #{run.pk} of {policy.name} queued.")
    return redirect("frontend:policy", pk=pk)


@login_required
@require_POST
def policy_enabled(request: HttpRequest, pk: int) -> HttpResponse:
    policy = _policy(request, pk, "change")
    services.set_policy_enabled(
        policy, enabled=request.POST.get("enabled") == "true", acting_user=request.user
    )
    if not is_partial(request):
        return redirect("frontend:policies")
    row = _annotated(ProtectionPolicy.objects.filter(pk=pk)).get()
    return render(request, "frontend/policies/_row.html", {"row": _rows(request, [row])[0]})


def _previewer(request: HttpRequest) -> PolicyEditor:
    if not may(request.user, "view", ProtectionPolicy):
        raise PermissionDenied("Your role does not include protection policies.")
    return PolicyEditor(request.user, data=request.POST)


@login_required
@require_POST
def rule_preview(request: HttpRequest) -> HttpResponse:
    vms, visible, total = _previewer(request).visible_selection()
    context = {"vms": vms, "visible": visible, "hidden": total - visible}
    return render(request, "frontend/policies/_rule_preview.html", context)


@login_required
@require_POST
def retention_preview(request: HttpRequest) -> HttpResponse:
    context = {"retention": _previewer(request).retention_preview()}
    return render(request, "frontend/policies/_retention_preview.html", context)


@login_required
@require_POST
def schedule_preview(request: HttpRequest) -> HttpResponse:
    context = {"previews": _previewer(request).schedule_previews()}
    return render(request, "frontend/policies/_schedule_preview.html", context)
