from typing import Any

from rest_framework import serializers

from inventory.choices import ConnectionKind
from storage.models import Repository, RestorePoint, RestorePointDisk
from storage.restore_targets import (
    KVM,
    VSPHERE,
    connection_kind,
    datastore_path_problem,
    family,
)
from storage.usage import usage_for


class RepositorySerializer(serializers.ModelSerializer):
    secret = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        style={"input_type": "password"},
        help_text="S3 secret key; stored encrypted and never returned.",
    )
    passphrase = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        style={"input_type": "password"},
        help_text="Encrypts the repository's key. Stored encrypted; keep a copy apart, as "
        "restores without the console need it. Changing it re-wraps the key only.",
    )
    has_secret = serializers.SerializerMethodField()
    point_count = serializers.SerializerMethodField(help_text="Restore points it holds.")
    logical_bytes = serializers.SerializerMethodField(
        help_text="Size of the disks its restore points restore, added up."
    )
    unique_bytes = serializers.SerializerMethodField(
        help_text="Uncompressed size of the chunks left after deduplication."
    )
    stored_bytes = serializers.SerializerMethodField(
        help_text="Bytes those chunks and their indexes take, compressed and encrypted."
    )
    dedup_ratio = serializers.SerializerMethodField(
        help_text="logical_bytes / unique_bytes; null until something is stored."
    )
    compression_ratio = serializers.SerializerMethodField(
        help_text="unique_bytes / stored_bytes; null until something is stored."
    )
    compression_level = serializers.IntegerField(min_value=1, max_value=19, required=False)

    class Meta:
        model = Repository
        fields = [
            "id",
            "name",
            "kind",
            "location",
            "s3_endpoint",
            "s3_region",
            "s3_prefix",
            "s3_access_key",
            "secret",
            "passphrase",
            "has_secret",
            "encryption_enabled",
            "key_fingerprint",
            "compression_level",
            "immutability_days",
            "capacity_bytes",
            "used_bytes",
            "point_count",
            "logical_bytes",
            "unique_bytes",
            "stored_bytes",
            "dedup_ratio",
            "compression_ratio",
            "usage_updated_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = [
            "key_fingerprint",
            "used_bytes",
            "usage_updated_at",
            "created_at",
            "updated_at",
        ]

    def get_has_secret(self, obj: Repository) -> bool:
        return bool(obj.secret)

    # The figures the console shows, from the list's one grouped query (storage/usage.py).
    def get_point_count(self, obj: Repository) -> int:
        return usage_for(obj).points

    def get_logical_bytes(self, obj: Repository) -> int:
        return usage_for(obj).logical_bytes

    def get_unique_bytes(self, obj: Repository) -> int:
        return usage_for(obj).unique_bytes

    def get_stored_bytes(self, obj: Repository) -> int:
        return usage_for(obj).stored_bytes

    def get_dedup_ratio(self, obj: Repository) -> float | None:
        ratio = usage_for(obj).dedup_ratio
        return None if ratio is None else round(ratio, 2)

    def get_compression_ratio(self, obj: Repository) -> float | None:
        ratio = usage_for(obj).compression_ratio
        return None if ratio is None else round(ratio, 2)


class RestorePointDiskSerializer(serializers.ModelSerializer):
    class Meta:
        model = RestorePointDisk
        fields = [
            "id",
            "restore_point",
            "disk",
            "device_key",
            "label",
            "capacity_bytes",
            "index_path",
            "read_bytes",
            "stored_bytes",
            "change_token",
            "full_read_reason",
            "checksum",
            "corrupt_ranges",
        ]


class RestorePointSerializer(serializers.ModelSerializer):
    disks = RestorePointDiskSerializer(many=True, read_only=True)

    class Meta:
        model = RestorePoint
        fields = [
            "id",
            "point_id",
            "vm",
            "vm_key",
            "vm_name",
            "repository",
            "run",
            "created_at",
            "state",
            "consistency",
            "protected",
            "logical_bytes",
            "read_bytes",
            "stored_bytes",
            "new_unique_bytes",
            "manifest_path",
            "immutable_until",
            "verified_at",
            "verify_error",
            "disks",
        ]


class ProtectSerializer(serializers.Serializer):
    protected = serializers.BooleanField()


class VerifyRequestSerializer(serializers.Serializer):
    deep = serializers.BooleanField(
        default=False, help_text="Read, decrypt and re-hash every chunk (slow, thorough)."
    )


class RestoreRequestSerializer(serializers.Serializer):
    """A restore request. Which fields apply depends on what is restored and where to:

    - one disk to a file on the proxy: `what=disk, disk, path` (absolute), `format`;
    - one disk to a vSphere datastore: `what=disk, disk, to=datastore, connection, datastore,
      path` (`folder/name.vmdk` inside the datastore);
    - the whole VM on a KVM host: `what=vm, connection, name, path` (absolute directory for its
      disks), `start`;
    - the whole VM on vCenter/ESXi: `what=vm, connection, name, datastore`, `start` (power on).

    The validated data holds only the fields of that case (they become the run's options)."""

    what = serializers.ChoiceField(choices=["disk", "vm"])
    disk = serializers.CharField(required=False, help_text="Device key of the disk (what=disk).")
    to = serializers.ChoiceField(
        choices=["file", "datastore"],
        default="file",
        help_text="what=disk: a file on the proxy, or a vSphere datastore.",
    )
    path = serializers.CharField(
        required=False,
        help_text="The file to write (what=disk to a file: absolute), the disk's path in the "
        "datastore (to=datastore: folder/name.vmdk), or the directory for the new VM's disks "
        "(what=vm on a KVM host: absolute).",
    )
    format = serializers.ChoiceField(
        choices=["raw", "qcow2"], default="raw", help_text="what=disk to a file."
    )
    name = serializers.CharField(required=False, help_text="Name of the new VM (what=vm).")
    connection = serializers.IntegerField(
        required=False,
        help_text="The KVM host, vCenter or ESXi host to restore the VM to (what=vm), or the "
        "vCenter/ESXi whose datastore receives the disk (to=datastore).",
    )
    datastore = serializers.CharField(
        required=False,
        help_text="vSphere datastore name (what=vm on vCenter/ESXi, or to=datastore).",
    )
    start = serializers.BooleanField(
        default=False, help_text="what=vm: start (power on) the new VM once created."
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs["what"] == "disk":
            return self._disk(attrs)
        return self._vm(attrs)

    def _disk(self, attrs: dict[str, Any]) -> dict[str, Any]:
        errors: dict[str, str] = {}
        if not attrs.get("disk"):
            errors["disk"] = "Which disk to restore."
        options = {"what": "disk", "disk": attrs.get("disk"), "to": attrs["to"]}
        if attrs["to"] == "file":
            _absolute(attrs, errors)
            options.update(path=attrs.get("path"), format=attrs["format"])
        else:
            _require(
                attrs, errors, ("connection", "datastore"), "Required to restore to a datastore."
            )
            path = str(attrs.get("path") or "")
            problem = datastore_path_problem(path)
            if problem:
                errors["path"] = problem
            options.update(
                connection=attrs.get("connection"), datastore=attrs.get("datastore"), path=path
            )
        if errors:
            raise serializers.ValidationError(errors)
        return options

    def _vm(self, attrs: dict[str, Any]) -> dict[str, Any]:
        errors: dict[str, str] = {}
        _require(attrs, errors, ("name", "connection"), "Required to restore a VM.")
        options = {
            "what": "vm",
            "connection": attrs.get("connection"),
            "name": attrs.get("name"),
            "start": attrs["start"],
        }
        kind = connection_kind(attrs.get("connection"))
        if family(kind) == KVM:
            _absolute(attrs, errors)
            options["path"] = attrs.get("path")
        elif family(kind) == VSPHERE:
            _require(attrs, errors, ("datastore",), "Required to restore a VM to vSphere.")
            options["datastore"] = attrs.get("datastore")
        elif attrs.get("connection") and "connection" not in errors:
            errors["connection"] = (
                "No such connection."
                if kind is None
                else f"VMs cannot be restored to {ConnectionKind(kind).label} yet."
            )
        if errors:
            raise serializers.ValidationError(errors)
        return options


def _require(
    attrs: dict[str, Any], errors: dict[str, str], names: tuple[str, ...], message: str
) -> None:
    for name in names:
        if not attrs.get(name):
            errors.setdefault(name, message)


def _absolute(attrs: dict[str, Any], errors: dict[str, str]) -> None:
    if not attrs.get("path"):
        errors["path"] = "An absolute path is required."
    elif not str(attrs["path"]).startswith("/"):
        errors["path"] = "Give an absolute path."


class CopyRequestSerializer(serializers.Serializer):
    target = serializers.PrimaryKeyRelatedField(
        queryset=Repository.objects.all(),
        error_messages={"does_not_exist": "Repository {pk_value} does not exist."},
        help_text="The repository that receives the copies (it may use other keys).",
    )
    restore_point = serializers.IntegerField(required=False)


class PruneRequestSerializer(serializers.Serializer):
    policy = serializers.IntegerField(
        required=False, help_text="Only this policy's restore points (default: all policies)."
    )
