from __future__ import annotations

from rest_framework import serializers

from inventory.choices import Transport
from inventory.models import Connection, InventoryObject, Proxy, Tag, VirtualDisk, VirtualMachine
from jobs.models import ProtectionPolicy


class ConnectionSerializer(serializers.ModelSerializer):
    secret = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        style={"input_type": "password"},
        help_text="Password or API secret; stored encrypted and never returned.",
    )
    skip_test = serializers.BooleanField(
        write_only=True,
        default=False,
        help_text="Save without testing the endpoint first.",
    )
    has_secret = serializers.BooleanField(read_only=True)
    port = serializers.IntegerField(
        required=False, min_value=1, max_value=65535, help_text="Defaults to the kind's port."
    )

    class Meta:
        model = Connection
        fields = [
            "id",
            "name",
            "kind",
            "address",
            "port",
            "username",
            "secret",
            "has_secret",
            "verify_tls",
            "tls_fingerprint",
            "skip_test",
            "last_tested_at",
            "last_test_ok",
            "last_test_message",
            "last_synced_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = [
            "last_tested_at",
            "last_test_ok",
            "last_test_message",
            "last_synced_at",
            "created_at",
            "updated_at",
        ]


class ConnectionTestSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    message = serializers.CharField()
    fingerprint = serializers.CharField(allow_blank=True)


class InventoryObjectSerializer(serializers.ModelSerializer):
    class Meta:
        model = InventoryObject
        fields = [
            "id",
            "connection",
            "kind",
            "external_id",
            "name",
            "parent",
            "capacity_bytes",
            "free_bytes",
            "last_seen_at",
        ]


class TagSerializer(serializers.ModelSerializer):
    class Meta:
        model = Tag
        fields = ["id", "name"]


class VirtualDiskSerializer(serializers.ModelSerializer):
    excluded = serializers.BooleanField(read_only=True)
    excluded_reason = serializers.CharField(read_only=True)

    class Meta:
        model = VirtualDisk
        fields = [
            "id",
            "vm",
            "device_key",
            "label",
            "capacity_bytes",
            "location",
            "datastore",
            "mode",
            "excluded",
            "excluded_reason",
        ]


class VirtualMachineSerializer(serializers.ModelSerializer):
    tags: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="name", many=True, read_only=True
    )
    disks = VirtualDiskSerializer(many=True, read_only=True)
    policies: serializers.PrimaryKeyRelatedField = serializers.PrimaryKeyRelatedField(
        source="protecting_policies", many=True, read_only=True
    )
    latest_restore_point = serializers.IntegerField(
        source="latest_restore_point_id", read_only=True, allow_null=True
    )

    class Meta:
        model = VirtualMachine
        fields = [
            "id",
            "connection",
            "external_id",
            "instance_uuid",
            "name",
            "power_state",
            "guest_os",
            "datacenter",
            "cluster",
            "host",
            "folder",
            "tags",
            "cpus",
            "memory_mib",
            "present",
            "last_seen_at",
            "disks",
            "policies",
            "latest_restore_point",
        ]


class ProxySerializer(serializers.ModelSerializer):
    transports = serializers.ListField(
        child=serializers.ChoiceField(choices=Transport.choices), required=False
    )
    connections = serializers.PrimaryKeyRelatedField(
        many=True, queryset=Connection.objects.all(), required=False
    )
    task_slots = serializers.IntegerField(min_value=1, max_value=256, required=False)

    class Meta:
        model = Proxy
        fields = [
            "id",
            "name",
            "queue",
            "task_slots",
            "transports",
            "connections",
            "enabled",
            "hostname",
            "version",
            "last_heartbeat",
        ]
        read_only_fields = ["hostname", "version", "last_heartbeat"]

    def validate_transports(self, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise serializers.ValidationError("List each transport once.")
        return value


class VMBackupSerializer(serializers.Serializer):
    policy = serializers.PrimaryKeyRelatedField(
        queryset=ProtectionPolicy.objects.all(),
        required=False,
        allow_null=True,
        help_text="Whose repository and retention apply; default: a policy protecting the VM.",
    )


class ResetCBTSerializer(serializers.Serializer):
    vms = serializers.ListField(
        child=serializers.IntegerField(),
        min_length=1,
        max_length=50,
        help_text="The vSphere VMs whose Changed Block Tracking is reset.",
    )


class ResetCBTResultSerializer(serializers.Serializer):
    vm = serializers.IntegerField()
    ok = serializers.BooleanField()
    message = serializers.CharField()
