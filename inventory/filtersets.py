"""FilterSets shared by the console's lists and the API."""

import django_filters as filters

from inventory.choices import ConnectionKind, ObjectKind, PowerState
from inventory.models import Connection, InventoryObject, Proxy, Tag, VirtualDisk, VirtualMachine


class ConnectionFilterSet(filters.FilterSet):
    q = filters.CharFilter(method="search", label="Search")
    kind = filters.MultipleChoiceFilter(choices=ConnectionKind.choices)

    class Meta:
        model = Connection
        fields = ["kind", "last_test_ok"]

    def search(self, queryset, name, value):  # type: ignore[no-untyped-def]
        return queryset.filter(name__icontains=value) | queryset.filter(address__icontains=value)


class InventoryObjectFilterSet(filters.FilterSet):
    kind = filters.MultipleChoiceFilter(choices=ObjectKind.choices)
    name = filters.CharFilter(lookup_expr="icontains")
    parent = filters.ModelChoiceFilter(queryset=InventoryObject.objects.all(), null_label="none")

    class Meta:
        model = InventoryObject
        fields = ["connection", "kind", "parent"]


class VirtualMachineFilterSet(filters.FilterSet):
    q = filters.CharFilter(field_name="name", lookup_expr="icontains", label="Name contains")
    power_state = filters.MultipleChoiceFilter(choices=PowerState.choices)
    tag = filters.CharFilter(field_name="tags__name", label="Tag", distinct=True)
    protected = filters.BooleanFilter(method="filter_protected", label="Protected by a policy")
    policy = filters.NumberFilter(field_name="protecting_policies", label="Protected by policy")

    class Meta:
        model = VirtualMachine
        fields = ["connection", "host", "cluster", "folder", "datacenter", "present"]

    def filter_protected(self, queryset, name, value):  # type: ignore[no-untyped-def]
        if value:
            return queryset.filter(protecting_policies__isnull=False).distinct()
        return queryset.filter(protecting_policies__isnull=True)


class VirtualDiskFilterSet(filters.FilterSet):
    class Meta:
        model = VirtualDisk
        fields = ["vm", "mode", "datastore"]


class ProxyFilterSet(filters.FilterSet):
    class Meta:
        model = Proxy
        fields = ["enabled", "queue"]


class TagFilterSet(filters.FilterSet):
    name = filters.CharFilter(lookup_expr="icontains")

    class Meta:
        model = Tag
        fields = ["name"]
