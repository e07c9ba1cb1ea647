"""The inventory page: connections, the inventory tree and the filterable VM table."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Prefetch
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from backupconsole.permissions import may
from frontend.pages.inventory.access import htmx_target
from frontend.pages.inventory.connections import connection_queryset, decorate
from frontend.pages.inventory.tracking import latest_points, point_health
from frontend.pages.inventory.tree import build_tree, visible_objects
from inventory.choices import ObjectKind, PowerState
from inventory.filtersets import VirtualMachineFilterSet
from inventory.models import Connection, InventoryObject, Tag, VirtualMachine
from jobs.models import ProtectionPolicy

PAGE_SIZE = 25
# The VM table's filters, in the order of the filter bar (the FilterSet's parameter names).
FILTERS = ("q", "connection", "host", "folder", "tag", "protected", "power_state", "present")


def vm_table(request: HttpRequest) -> dict[str, Any]:
    """The VM table's context: VirtualMachineFilterSet (as in the API) on the VMs the user may
    see, one page of rows and what each row shows, in a fixed number of queries."""
    user = request.user
    data = request.GET.copy()
    data.setdefault("present", "true")  # VMs gone from the hypervisor only when asked for
    vms = (
        VirtualMachine.objects.with_latest_restore_point()
        .select_related("connection", "host", "folder")
        .prefetch_related(
            "tags",
            Prefetch(
                "protecting_policies",
                queryset=ProtectionPolicy.objects.restrict(user, "view").only("id", "name"),
                to_attr="visible_policies",
            ),
        )
    )
    filterset = VirtualMachineFilterSet(data, queryset=vms.restrict(user, "view"))
    page = Paginator(filterset.qs, PAGE_SIZE).get_page(request.GET.get("page"))
    rows = list(page.object_list)
    points = latest_points(rows, user)
    for vm in rows:
        vm.latest_point = points.get(vm.pk)  # type: ignore[attr-defined]
        vm.tracking = point_health(vm.latest_point)  # type: ignore[attr-defined]
    return {
        "filterset": filterset,
        "filter_errors": filterset.errors if filterset.is_bound else {},
        "selected": {name: data.get(name, "") for name in FILTERS},
        "filtered": any(request.GET.get(name) for name in FILTERS if name != "present"),
        "page": page,
        "vms": rows,
    }


def filter_choices(
    user: Any, connections: list[Connection], objects: list[InventoryObject]
) -> dict[str, Any]:
    """The choices of the filter bar: only rows the user may see (their names included)."""
    return {
        "connections": connections,
        "hosts": sorted((o for o in objects if o.kind == ObjectKind.HOST), key=_by_name),
        "folders": sorted((o for o in objects if o.kind == ObjectKind.FOLDER), key=_by_name),
        "tags": Tag.objects.restrict(user, "view").only("id", "name"),
        "power_states": PowerState.choices,
    }


def _by_name(obj: InventoryObject) -> tuple[str, int]:
    return (obj.name.lower(), obj.pk)


@login_required
def inventory(request: HttpRequest) -> HttpResponse:
    user = request.user
    may_view_vms = may(user, "view", VirtualMachine)
    if htmx_target(request) == "vm-table-region":
        return render(request, "frontend/inventory/_vm_table.html", vm_table(request))
    may_view_connections = may(user, "view", Connection)
    connections = list(connection_queryset(user)) if may_view_connections else []
    objects = visible_objects(user)
    context: dict[str, Any] = {
        "may_view_connections": may_view_connections,
        "may_view_vms": may_view_vms,
        "may_add_connection": may(user, "add", Connection),
        "connections": decorate(connections, user),
        "tree": build_tree(user, connections, objects) if may_view_connections else [],
    }
    if may_view_vms:
        context.update(vm_table(request))
        context["choices"] = filter_choices(user, connections, objects)
    return render(request, "frontend/inventory/inventory.html", context)
