"""The audit log page: the API's FilterSet on the events the user may view, newest first."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_GET

from backupconsole.filtersets import AuditEventFilterSet
from backupconsole.models import AuditEvent, RoleAssignment
from backupconsole.permissions import may
from frontend.htmx import is_partial
from frontend.pages.audit.export import csv_lines

PAGE_SIZE = 50

# The console page of an audited object, by content type (app label, model).
_OBJECT_PAGES = {
    ("inventory", "connection"): "connection",
    ("inventory", "virtualmachine"): "vm",
    ("jobs", "protectionpolicy"): "policy",
    ("jobs", "jobrun"): "run",
    ("storage", "repository"): "repository",
    ("auth", "user"): "user",
}


def _filterset(request: HttpRequest) -> AuditEventFilterSet:
    if not may(request.user, "view", AuditEvent):
        raise PermissionDenied("Your role does not include the audit log.")
    events = AuditEvent.objects.restrict(request.user, "view").select_related("object_type")
    return AuditEventFilterSet(request.GET, queryset=events)


def _object_url(event: AuditEvent, manages_users: bool) -> str:
    page = _OBJECT_PAGES.get(
        (event.object_type.app_label, event.object_type.model) if event.object_type else ("", "")
    )
    if not page or not event.object_id.isdigit() or (page == "user" and not manages_users):
        return ""
    try:
        return reverse(f"frontend:{page}", args=[int(event.object_id)])
    except NoReverseMatch:
        return ""


def changes(before: Any, after: Any) -> list[tuple[str, Any, Any]]:
    """The fields an event changed, as (name, before, after); every field for a create or
    delete."""
    if not isinstance(before, dict) and not isinstance(after, dict):
        return [] if before == after else [("value", before, after)]
    old = before if isinstance(before, dict) else {}
    new = after if isinstance(after, dict) else {}
    return [
        (name, old.get(name), new.get(name))
        for name in sorted(old.keys() | new.keys())
        if name not in old or name not in new or old[name] != new[name]
    ]


def _suggestions(events: QuerySet[AuditEvent]) -> dict[str, list[str]]:
    """Known values for the filter fields' suggestion lists, in one query."""
    triples = events.order_by().values_list("action", "object_type__model", "username").distinct()
    actions, types, users = set(), set(), set()
    for action, object_type, username in triples:
        actions.add(action)
        if object_type:
            types.add(object_type)
        if username:
            users.add(username)
    return {"actions": sorted(actions), "object_types": sorted(types), "usernames": sorted(users)}


@login_required
@require_GET
def audit_log(request: HttpRequest) -> HttpResponse:
    filterset = _filterset(request)
    page = Paginator(filterset.qs, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    manages_users = may(request.user, "manage", RoleAssignment)
    context: dict[str, Any] = {
        "filterset": filterset,
        "form": filterset.form,
        "page": page,
        "rows": [
            {
                "event": e,
                "url": _object_url(e, manages_users),
                "changes": changes(e.before, e.after),
            }
            for e in page
        ],
        "filtered": any(query.values()),
        "export_query": query.urlencode(),
    }
    if is_partial(request):
        response = render(request, "frontend/audit/_results.html", context)
    else:
        context["suggestions"] = _suggestions(filterset.queryset)
        response = render(request, "frontend/audit/list.html", context)
    patch_vary_headers(response, ["HX-Request"])
    return response


@login_required
@require_GET
def audit_export(request: HttpRequest) -> StreamingHttpResponse:
    events = _filterset(request).qs
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M%S")
    response = StreamingHttpResponse(
        csv_lines(events, timezone.get_current_timezone()), content_type="text/csv; charset=utf-8"
    )
    response["Content-Disposition"] = f'attachment; filename="audit-log-{stamp}.csv"'
    return response
