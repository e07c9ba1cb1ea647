from rest_framework import serializers

from storage.models import Repository, RestorePoint, RestorePointDisk


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
    dedup_ratio = serializers.SerializerMethodField(
        help_text="Logical size of all restore points / bytes stored."
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
            "dedup_ratio",
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

    def get_dedup_ratio(self, obj: Repository) -> float | None:
        logical = getattr(obj, "logical_total", None)
        if not logical or not obj.used_bytes:
            return None
        return round(logical / obj.used_bytes, 2)


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
    what = serializers.ChoiceField(choices=["disk", "vm"])
    disk = serializers.CharField(required=False, help_text="Device key of the disk (what=disk).")
    path = serializers.CharField(
        help_text="what=disk: the file to write; what=vm: the directory for the new disks."
    )
    format = serializers.ChoiceField(choices=["raw", "qcow2"], default="raw")
    name = serializers.CharField(required=False, help_text="Name of the new VM (what=vm).")
    connection = serializers.IntegerField(
        required=False, help_text="The KVM host to define the VM on (what=vm)."
    )
    start = serializers.BooleanField(default=False)

    def validate(self, attrs: dict[str, object]) -> dict[str, object]:
        if not str(attrs["path"]).startswith("/"):
            raise serializers.ValidationError({"path": "Give an absolute path."})
        if attrs["what"] == "disk" and not attrs.get("disk"):
            raise serializers.ValidationError({"disk": "Which disk to restore."})
        if attrs["what"] == "vm":
            missing = {
                k: "Required to restore a VM." for k in ("name", "connection") if not attrs.get(k)
            }
            if missing:
                raise serializers.ValidationError(missing)
        return attrs


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
