"""Runs pages: the list, a run's live page, the fragments they poll and cancel."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_POST

from backupconsole.errors import ActionRefused
from backupconsole.permissions import may
from frontend.htmx import is_partial
from jobs import services
from jobs.models import JobRun

from . import fragments
from .listing import list_runs
from .sockets import rows_socket, run_socket

View = Callable[..., HttpResponse]


def fragment_view(view: View) -> View:
    """For endpoints that pages poll: a signed-out user gets 401, not the login page (which
    HTMX would follow and swap into the page)."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return HttpResponse("Signed out.", status=401, content_type="text/plain")
        return view(request, *args, **kwargs)

    return wrapper


@login_required
def run_list(request: HttpRequest) -> HttpResponse:
    if not may(request.user, "view", JobRun):
        raise PermissionDenied("You may not view runs.")
    listing = list_runs(request)
    context = {"listing": listing, "socket": rows_socket(listing.active_pks)}
    template = "frontend/runs/_list.html" if is_partial(request) else "frontend/runs/list.html"
    response = render(request, template, context)
    patch_vary_headers(response, ["HX-Request"])
    return response


@login_required
def run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    run = get_object_or_404(fragments.visible_runs(request.user), pk=pk)
    context = fragments.live_context(request.user, run)
    context["live_html"] = fragments.render_live(context)
    context["socket"] = run_socket(run.pk)
    return render(request, "frontend/runs/detail.html", context)


@fragment_view
def run_live(request: HttpRequest, pk: int) -> HttpResponse:
    html = fragments.live_html(request.user, pk)
    if html is None:
        raise Http404("No such run.")
    return HttpResponse(html)


@fragment_view
def run_row(request: HttpRequest, pk: int) -> HttpResponse:
    html = fragments.rows_html(request.user, [pk])
    if not html:
        raise Http404("No such run.")
    return HttpResponse(html)


@fragment_view
def running(request: HttpRequest) -> HttpResponse:
    if not may(request.user, "view", JobRun):
        raise PermissionDenied("You may not view runs.")
    return HttpResponse(fragments.running_html(request.user))


@login_required
@require_POST
def run_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    run = get_object_or_404(JobRun.objects.restrict(request.user, "view"), pk=pk)
    if not JobRun.objects.restrict(request.user, "run").filter(pk=run.pk).exists():
        raise PermissionDenied("You may not cancel this run.")
    try:
        services.cancel_run(run, acting_user=request.user)
    except ActionRefused as refused:
        messages.error(request, refused.message)
    else:
        messages.success(request, f"Run #{run.pk}: cancel requested.")
    return redirect("frontend:run", pk=run.pk)
