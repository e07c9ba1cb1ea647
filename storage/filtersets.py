"""FilterSets shared by the console's lists and the API."""

import django_filters as filters

from storage.choices import RepositoryKind, RestorePointState
from storage.models import Repository, RestorePoint, RestorePointDisk


class RepositoryFilterSet(filters.FilterSet):
    kind = filters.MultipleChoiceFilter(choices=RepositoryKind.choices)
    name = filters.CharFilter(lookup_expr="icontains")

    class Meta:
        model = Repository
        fields = ["kind", "encryption_enabled"]


class RestorePointFilterSet(filters.FilterSet):
    state = filters.MultipleChoiceFilter(choices=RestorePointState.choices)
    created_after = filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = RestorePoint
        fields = ["vm", "repository", "run", "protected", "consistency"]


class RestorePointDiskFilterSet(filters.FilterSet):
    class Meta:
        model = RestorePointDisk
        fields = ["restore_point", "disk"]
