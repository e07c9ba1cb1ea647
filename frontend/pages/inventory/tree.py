"""The inventory tree: connection → datacenter → cluster/pool → host → VM.

Built from three queries (connections, inventory objects, VMs), whatever the estate's size;
the page shares the first two with the VM table's filters.
Folders and datastores are not levels of this tree (folders filter the VM table instead): a
node under a folder hangs from the folder's nearest shown ancestor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from inventory.choices import ObjectKind
from inventory.models import Connection, InventoryObject, VirtualMachine

# Kinds shown as levels, with the VM table filter each node applies and its icon.
LEVELS = {
    ObjectKind.DATACENTER: ("datacenter", "building"),
    ObjectKind.CLUSTER: ("cluster", "diagram-3"),
    ObjectKind.POOL: ("cluster", "diagram-3"),
    ObjectKind.HOST: ("host", "hdd-rack"),
}
# VMs listed under one node; the rest are a click away in the filtered table.
VMS_PER_NODE = 25
_VM_FIELDS = (
    "id",
    "name",
    "power_state",
    "connection_id",
    "host_id",
    "cluster_id",
    "datacenter_id",
)


@dataclass
class TreeNode:
    key: str  # unique within the page, for element ids
    label: str
    kind: str  # "connection" or an ObjectKind value
    icon: str
    query: str  # the VM table filter, e.g. "host=12"
    children: list[TreeNode] = field(default_factory=list)
    vms: list[VirtualMachine] = field(default_factory=list)
    vm_total: int = 0  # VMs in this node and below

    @property
    def more(self) -> int:
        return len(self.vms) - VMS_PER_NODE if len(self.vms) > VMS_PER_NODE else 0

    @property
    def shown_vms(self) -> list[VirtualMachine]:
        return self.vms[:VMS_PER_NODE]


def visible_objects(user: Any) -> list[InventoryObject]:
    """The inventory objects ``user`` may see, with what the tree and the filters need."""
    return list(
        InventoryObject.objects.restrict(user, "view").only(
            "id", "name", "kind", "parent_id", "connection_id"
        )
    )


def build_tree(
    user: Any, connections: list[Connection], inventory_objects: list[InventoryObject]
) -> list[TreeNode]:
    """The tree of ``connections`` and ``inventory_objects`` (both restricted to what ``user``
    may see already) with the VMs ``user`` may see: one more query."""
    roots = {
        c.pk: TreeNode(f"c{c.pk}", c.name, "connection", "hdd-network", f"connection={c.pk}")
        for c in connections
    }
    objects = {o.pk: o for o in inventory_objects if o.connection_id in roots}
    nodes: dict[int, TreeNode] = {}
    for obj in objects.values():
        if obj.kind in LEVELS:
            param, icon = LEVELS[ObjectKind(obj.kind)]
            nodes[obj.pk] = TreeNode(f"o{obj.pk}", obj.name, obj.kind, icon, f"{param}={obj.pk}")

    def shown_parent(obj: InventoryObject) -> TreeNode:
        seen = {obj.pk}
        parent_id = obj.parent_id
        while parent_id is not None and parent_id in objects and parent_id not in seen:
            if parent_id in nodes:
                return nodes[parent_id]
            seen.add(parent_id)
            parent_id = objects[parent_id].parent_id
        return roots[obj.connection_id]

    for pk, node in nodes.items():
        shown_parent(objects[pk]).children.append(node)
    vms = (
        VirtualMachine.objects.restrict(user, "view")
        .filter(present=True, connection_id__in=list(roots))
        .only(*_VM_FIELDS)
        .order_by("name", "id")
    )
    for vm in vms:
        holder = next(
            (nodes[pk] for pk in (vm.host_id, vm.cluster_id, vm.datacenter_id) if pk in nodes),
            roots[vm.connection_id],
        )
        holder.vms.append(vm)
    tree = [roots[c.pk] for c in connections]
    for root in tree:
        _finish(root)
    return tree


def _finish(node: TreeNode) -> int:
    node.children.sort(key=lambda child: (child.label.lower(), child.key))
    node.vm_total = len(node.vms) + sum(_finish(child) for child in node.children)
    return node.vm_total
