from django.contrib.auth import get_user_model
from rest_framework import serializers

from backupconsole.models import AuditEvent, RoleAssignment


class AuditEventSerializer(serializers.ModelSerializer):
    object_type: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="model", read_only=True
    )

    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "time",
            "user",
            "username",
            "action",
            "object_type",
            "object_id",
            "object_repr",
            "before",
            "after",
            "client_address",
        ]


class RoleAssignmentSerializer(serializers.ModelSerializer):
    user = serializers.PrimaryKeyRelatedField(queryset=get_user_model().objects.all())

    class Meta:
        model = RoleAssignment
        fields = ["id", "user", "role", "object_types", "constraints", "created_at"]
        read_only_fields = ["created_at"]


class UserSerializer(serializers.ModelSerializer):
    roles: serializers.SlugRelatedField = serializers.SlugRelatedField(
        source="role_assignments", slug_field="role", many=True, read_only=True
    )

    class Meta:
        model = get_user_model()
        fields = ["id", "username", "email", "is_active", "is_superuser", "last_login", "roles"]


class TokenRequestSerializer(serializers.Serializer):
    username = serializers.CharField()
    password = serializers.CharField(style={"input_type": "password"}, trim_whitespace=False)


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField()
