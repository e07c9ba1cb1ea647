"""FilterSets shared by the console's lists and the API."""

import django_filters as filters
from django.contrib.auth import get_user_model

from backupconsole.models import AuditEvent, RoleAssignment
from backupconsole.roles import Role


class AuditEventFilterSet(filters.FilterSet):
    action = filters.CharFilter(lookup_expr="startswith")
    username = filters.CharFilter()
    object_type = filters.CharFilter(field_name="object_type__model")
    time_after = filters.IsoDateTimeFilter(field_name="time", lookup_expr="gte")
    time_before = filters.IsoDateTimeFilter(field_name="time", lookup_expr="lt")

    class Meta:
        model = AuditEvent
        fields = ["user", "object_id"]


class RoleAssignmentFilterSet(filters.FilterSet):
    role = filters.ChoiceFilter(choices=Role.choices)

    class Meta:
        model = RoleAssignment
        fields = ["user"]


class UserFilterSet(filters.FilterSet):
    username = filters.CharFilter(lookup_expr="icontains")

    class Meta:
        model = get_user_model()
        fields = ["is_active"]
