"""factory-boy factories for the domain models (rows made directly, as fixtures)."""

from __future__ import annotations

import factory
from django.utils import timezone

from inventory.choices import ConnectionKind, DiskMode
from inventory.models import Connection, Tag, VirtualDisk, VirtualMachine
from jobs.models import ProtectionPolicy
from storage.choices import RestorePointState
from storage.models import Repository, RestorePoint


class ConnectionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Connection

    name = factory.Sequence(lambda n: f"kvm-host-{n}")
    kind = ConnectionKind.KVM
    address = "127.0.0.1"
    port = 22


class TagFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Tag
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"tag-{n}")


class VirtualMachineFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = VirtualMachine
        skip_postgeneration_save = True

    connection = factory.SubFactory(ConnectionFactory)
    external_id = factory.Sequence(lambda n: f"vm-{n}")
    name = factory.Sequence(lambda n: f"vm-{n}")

    @factory.post_generation
    def tags(self, create: bool, extracted: list[str] | None, **kwargs: object) -> None:
        if create and extracted:
            self.tags.set([TagFactory(name=name) for name in extracted])


class VirtualDiskFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = VirtualDisk

    vm = factory.SubFactory(VirtualMachineFactory)
    device_key = factory.Sequence(lambda n: f"vd{chr(97 + n % 26)}{n}")
    capacity_bytes = 10 * 2**30
    mode = DiskMode.PERSISTENT


class RepositoryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Repository

    name = factory.Sequence(lambda n: f"repo-{n}")
    kind = "filesystem"
    location = factory.Sequence(lambda n: f"/tmp/backupconsole-test-repo-{n}")


class PolicyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ProtectionPolicy

    name = factory.Sequence(lambda n: f"policy-{n}")
    repository = factory.SubFactory(RepositoryFactory)


class RestorePointFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = RestorePoint

    vm = factory.SubFactory(VirtualMachineFactory)
    vm_key = factory.LazyAttribute(lambda point: f"key-{point.vm.external_id}")
    vm_name = factory.LazyAttribute(lambda point: point.vm.name)
    point_id = factory.Sequence(lambda n: f"20261101T000000000Z-{n:016x}")
    repository = factory.SubFactory(RepositoryFactory)
    created_at = factory.LazyFunction(timezone.now)
    state = RestorePointState.COMMITTED


def repository_with_usage(name: str) -> Repository:
    """A repository holding two points of 10 GiB each that together wrote 4 GiB of new chunks,
    stored as 2 GiB: dedup ratio 5, compression ratio 2."""
    repository = RepositoryFactory(name=name)
    for unique, stored in ((3, 1.5), (1, 0.5)):
        RestorePointFactory(
            repository=repository,
            logical_bytes=10 * 2**30,
            new_unique_bytes=unique * 2**30,
            stored_bytes=int(stored * 2**30),
        )
    return repository
