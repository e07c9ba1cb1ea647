"""Connection pages and actions: add, edit, test, sync, delete."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from backupconsole.errors import ActionRefused
from backupconsole.permissions import may
from frontend.htmx import is_partial
from frontend.pages.inventory.access import (
    allowed_pks,
    htmx_target,
    require,
    safe_next,
    visible_or_404,
)
from frontend.pages.inventory.forms import (
    FINGERPRINT_IN_TEXT,
    PROBE_FIELDS,
    ConnectionForm,
    initial_for,
)
from frontend.pages.inventory.status import sync_status, with_sync_status
from inventory import services
from inventory.models import Connection, VirtualMachine

FORM_TEMPLATE = "frontend/inventory/connection_form.html"


def connection_queryset(user: Any) -> QuerySet[Connection]:
    """Connections ``user`` may see, with their sync state and number of present VMs."""
    present = (
        VirtualMachine.objects.filter(connection=OuterRef("pk"), present=True)
        .order_by()
        .values("connection")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return with_sync_status(Connection.objects.restrict(user, "view")).annotate(
        vm_count=Coalesce(Subquery(present), 0)
    )


def endpoint(connection: Connection) -> str:
    """How the connection is reached: a URI or socket path as given, else host:port."""
    if connection.address.startswith(("/", "qemu")):
        return connection.address
    return f"{connection.address}:{connection.port}"


def decorate(connections: list[Connection], user: Any) -> list[Connection]:
    """Adds what each row shows: the sync state and the actions ``user`` may take."""
    pks = [c.pk for c in connections]
    if not pks:
        return connections
    changeable = allowed_pks(Connection.objects.all(), pks, user, "change")
    deletable = allowed_pks(Connection.objects.all(), pks, user, "delete")
    for connection in connections:
        connection.sync = sync_status(connection)  # type: ignore[attr-defined]
        connection.endpoint = endpoint(connection)  # type: ignore[attr-defined]
        connection.can_change = connection.pk in changeable  # type: ignore[attr-defined]
        connection.can_delete = connection.pk in deletable  # type: ignore[attr-defined]
    return connections


def _one(user: Any, pk: int) -> Connection:
    connection = visible_or_404(connection_queryset(user), user, pk)
    return decorate([connection], user)[0]


def _status_response(request: HttpRequest, connection: Connection, **extra: Any) -> HttpResponse:
    """The fragment an HTMX action or poll replaces: a list row, or the page's status card."""
    as_row = (request.POST.get("as") or request.GET.get("as")) == "row"
    template = "_connection_row.html" if as_row else "_connection_status.html"
    return render(request, f"frontend/inventory/{template}", {"connection": connection, **extra})


@login_required
def connection_status(request: HttpRequest, pk: int) -> HttpResponse:
    """Polled while a sync is queued; the fragment stops polling once it has an outcome."""
    return _status_response(request, _one(request.user, pk))


@login_required
@require_POST
def connection_test(request: HttpRequest, pk: int) -> HttpResponse:
    connection = _one(request.user, pk)
    require(request.user, connection, "change")
    result = services.test_connection(connection, acting_user=request.user)
    if is_partial(request):
        return _status_response(request, _one(request.user, pk))
    level = messages.SUCCESS if result.ok else messages.ERROR
    messages.add_message(request, level, f"{connection.name}: {result.message}")
    return redirect(safe_next(request, reverse("frontend:connection", args=[pk])))


@login_required
@require_POST
def connection_sync(request: HttpRequest, pk: int) -> HttpResponse:
    connection = _one(request.user, pk)
    require(request.user, connection, "change")
    services.request_sync(connection, acting_user=request.user)
    if is_partial(request):
        return _status_response(request, _one(request.user, pk))
    messages.info(request, f"Sync of {connection.name} queued.")
    return redirect(safe_next(request, reverse("frontend:connection", args=[pk])))


def _fingerprint_offer(form: ConnectionForm) -> str:
    """The certificate fingerprint a refused save quoted, so the page can offer to trust it."""
    if not form.uses_tls:
        return ""
    for error in form.errors.get("address", []):
        found = FINGERPRINT_IN_TEXT.search(str(error))
        if found:
            return found.group(0)
    return ""


def _form_page(
    request: HttpRequest, form: ConnectionForm, connection: Connection | None
) -> HttpResponse:
    form.switch_kind_from(request.path)
    context = {
        "form": form,
        "connection": connection,
        "fingerprint_offer": _fingerprint_offer(form) if form.is_bound else "",
        "can_edit": connection is None or getattr(connection, "can_change", False),
    }
    if htmx_target(request) == "connection-fields":
        if not context["can_edit"]:
            raise PermissionDenied("You may not change this connection.")
        return render(request, "frontend/inventory/_connection_fields.html", context)
    return render(request, FORM_TEMPLATE, context)


def _kind_switch(request: HttpRequest, connection: Connection | None) -> ConnectionForm:
    """The form re-rendered for another kind (HTMX, on changing the kind): the values typed so
    far become initial values; nothing is validated yet."""
    initial: dict[str, Any] = {
        name: request.GET[name]
        for name in ConnectionForm.base_fields
        if name in request.GET and name != "password"
    }
    if "verify_tls" in initial:
        initial["verify_tls"] = initial["verify_tls"] == "on"
    return ConnectionForm(initial=initial, connection=connection)


def _save(
    request: HttpRequest, form: ConnectionForm, connection: Connection | None
) -> Connection | None:
    """Validate and save through the inventory services; None with errors on the form."""
    if not form.is_valid():
        return None
    data, secret = form.service_data()
    test = not form.cleaned_data.get("skip_test", False)
    try:
        if connection is None:
            return services.create_connection(
                data=data, secret=secret or "", acting_user=request.user, test=test
            )
        return services.update_connection(
            connection, data=data, secret=secret, acting_user=request.user, test=test
        )
    except ActionRefused as refused:
        field = refused.field if refused.field in form.fields else None
        form.add_error(field, refused.message)
        form.render_ready()
        return None


@login_required
@require_http_methods(["GET", "POST"])
def connection_new(request: HttpRequest) -> HttpResponse:
    if not may(request.user, "add", Connection):
        raise PermissionDenied("You may not add connections.")
    if request.method == "GET":
        if htmx_target(request) == "connection-fields":
            return _form_page(request, _kind_switch(request, None), None)
        return _form_page(request, ConnectionForm(), None)
    form = ConnectionForm(request.POST)
    saved = _save(request, form, None)
    if saved is None:
        return _form_page(request, form, None)
    messages.success(request, f"Connection {saved.name} added; its VMs are being discovered.")
    return redirect("frontend:connection", pk=saved.pk)


@login_required
@require_http_methods(["GET", "POST"])
def connection_edit(request: HttpRequest, pk: int) -> HttpResponse:
    """The connection's page: its status and actions, and the edit form for those who may."""
    connection = _one(request.user, pk)
    if request.method == "GET":
        if htmx_target(request) == "connection-fields":
            return _form_page(request, _kind_switch(request, connection), connection)
        return _form_page(
            request,
            ConnectionForm(initial=initial_for(connection), connection=connection),
            connection,
        )
    require(request.user, connection, "change")
    form = ConnectionForm(request.POST, connection=connection)
    saved = _save(request, form, connection)
    if saved is None:
        return _form_page(request, form, connection)
    messages.success(request, f"Connection {saved.name} saved.")
    return redirect("frontend:connection", pk=saved.pk)


@login_required
@require_POST
def connection_probe(request: HttpRequest) -> HttpResponse:
    """ "Test connection" on the form: probes the values typed, unsaved (HTMX fragment)."""
    connection = None
    if request.POST.get("connection"):
        pk = request.POST["connection"]
        if not pk.isdigit():
            raise Http404("No such connection.")
        connection = _one(request.user, int(pk))
        require(request.user, connection, "change")
    elif not may(request.user, "add", Connection):
        raise PermissionDenied("You may not add connections.")
    form = ConnectionForm(request.POST, connection=connection)
    target = form.probe_target()
    context: dict[str, Any] = {"form": form, "result": None, "pinned": ""}
    if target is None:
        context["probe_errors"] = [
            (form.fields[name].label or name, form.errors[name])
            for name in PROBE_FIELDS
            if name in form.errors
        ]
    else:
        context["result"] = services.probe_connection(target)
        context["pinned"] = target.tls_fingerprint
    return render(request, "frontend/inventory/_probe_result.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def connection_delete(request: HttpRequest, pk: int) -> HttpResponse:
    """A confirmation page (GET), then the deletion (POST)."""
    connection = _one(request.user, pk)
    require(request.user, connection, "delete")
    if request.method == "POST":
        try:
            services.delete_connection(connection, acting_user=request.user)
        except ActionRefused as refused:
            messages.error(request, refused.message)
            return redirect("frontend:connection", pk=pk)
        messages.success(request, f"Connection {connection.name} deleted.")
        return redirect("frontend:inventory")
    return render(request, "frontend/inventory/connection_delete.html", {"connection": connection})
