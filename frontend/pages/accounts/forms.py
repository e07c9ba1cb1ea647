"""Forms of the users and tokens pages; the rules they enforce live in backupconsole.services."""

from __future__ import annotations

from typing import Any

from django import forms

from backupconsole.roles import Role
from backupconsole.services import scopable_object_types
from frontend.forms import ConsoleForm


class PasswordChoiceForm(ConsoleForm):
    """A password typed by the administrator, or one generated and shown once."""

    password = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Leave empty and tick “Generate” to get a random one.",
    )
    generate = forms.BooleanField(required=False, label="Generate a password")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if not data.get("generate") and not data.get("password"):
            self.add_error("password", "Enter a password or tick “Generate a password”.")
        return data


class UserCreateForm(PasswordChoiceForm):
    field_order = ["username", "first_name", "last_name", "email", "role", "password", "generate"]

    username = forms.CharField(
        max_length=150, widget=forms.TextInput(attrs={"autocomplete": "off"})
    )
    first_name = forms.CharField(max_length=150, required=False, label="First name")
    last_name = forms.CharField(max_length=150, required=False, label="Last name")
    email = forms.EmailField(required=False, label="E-mail")
    role = forms.ChoiceField(
        choices=[("", "No role yet"), *Role.choices],
        required=False,
        help_text="On everything; narrower roles are added on the user's page.",
    )


class RoleForm(ConsoleForm):
    role = forms.ChoiceField(choices=Role.choices, initial=Role.VIEWER)
    object_types = forms.MultipleChoiceField(
        required=False,
        label="Only on",
        widget=forms.CheckboxSelectMultiple,
        help_text="Leave empty for every kind of object.",
    )
    constraints = forms.JSONField(
        required=False,
        label="Only the rows matching",
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": '{"tags__name": "web"}'}),
        help_text='Queryset lookups as JSON, e.g. {"tags__name": "web"}; needs object types.',
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        object_types: forms.MultipleChoiceField = self.fields["object_types"]  # type: ignore[assignment]
        object_types.choices = list(scopable_object_types().items())
