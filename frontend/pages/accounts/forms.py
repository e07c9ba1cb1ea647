"""Forms of the users and tokens pages; the rules they enforce live in backupconsole.services."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from backupconsole.roles import Role
from backupconsole.services import scopable_object_types


class ConsoleForm(forms.Form):
    """Bootstrap classes on the inputs; service validation errors land next to their fields."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            widget = field.widget
            if isinstance(widget, forms.CheckboxInput | forms.CheckboxSelectMultiple):
                widget.attrs.setdefault("class", "form-check-input")
            elif isinstance(widget, forms.Select):
                widget.attrs.setdefault("class", "form-select")
            else:
                widget.attrs.setdefault("class", "form-control")

    def full_clean(self) -> None:
        super().full_clean()
        for name in self.errors:
            self._mark_invalid(name)

    def _mark_invalid(self, name: str | None) -> None:
        if name is None or name not in self.fields:
            return
        field = self.fields[name]
        attrs = field.widget.attrs
        if "is-invalid" not in attrs.get("class", ""):
            attrs["class"] = attrs.get("class", "") + " is-invalid"
        auto_id = self[name].auto_id
        described = [f"{auto_id}_error", f"{auto_id}_helptext"] if field.help_text else []
        attrs["aria-describedby"] = " ".join(described or [f"{auto_id}_error"])

    def add_service_error(self, error: ValidationError) -> None:
        """Adds a service's ValidationError, keyed by field where the form has that field."""
        if not hasattr(error, "error_dict"):
            self.add_error(None, error)
            return
        for name, errors in error.error_dict.items():
            field = name if name in self.fields else None
            self.add_error(field, errors)
            self._mark_invalid(field)


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
