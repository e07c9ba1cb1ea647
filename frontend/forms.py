"""The console's form base: Bootstrap classes on every input, the invalid state once validated,
and the ARIA links from each input to its help (``<id>_helptext``, Django's own id) and errors
(``<id>_error``), as ``frontend/includes/field.html`` renders them."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError


def style_fields(form: forms.BaseForm) -> None:
    """(Re)style ``form``'s widgets for its current errors; a class set by the form is kept."""
    errors = getattr(form, "_errors", None) or {}  # None until validated
    for name, field in form.fields.items():
        widget = field.widget
        classes = widget.attrs.get("class", "").replace("is-invalid", "").split()
        if not classes:
            if isinstance(widget, forms.CheckboxInput | forms.CheckboxSelectMultiple):
                classes = ["form-check-input"]
            elif isinstance(widget, forms.Select):  # SelectMultiple too
                classes = ["form-select"]
            else:
                classes = ["form-control"]
        auto_id = _auto_id(form, name)
        described = [f"{auto_id}_helptext"] if field.help_text else []
        if name in errors:
            classes.append("is-invalid")
            described.append(f"{auto_id}_error")
            widget.attrs["aria-invalid"] = "true"
        else:
            widget.attrs.pop("aria-invalid", None)
        widget.attrs["class"] = " ".join(classes)
        if described:
            widget.attrs["aria-describedby"] = " ".join(described)
        else:
            widget.attrs.pop("aria-describedby", None)


def _auto_id(form: forms.BaseForm, name: str) -> str:
    # As BoundField.auto_id computes it, without creating the bound field: Django caches those,
    # with their label and help text, and a form may still change both after styling.
    template = form.auto_id
    if template and "%s" in str(template):
        return str(template) % form.add_prefix(name)
    return form.add_prefix(name) if template else ""


class ConsoleForm(forms.Form):
    """Every console form: styled as it is built and again once validated."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        style_fields(self)

    def full_clean(self) -> None:
        super().full_clean()
        style_fields(self)

    def render_ready(self) -> ConsoleForm:
        """Called before rendering, after errors were added by hand: restyle, return the form."""
        style_fields(self)
        return self

    def add_service_error(self, error: ValidationError) -> None:
        """A service's ValidationError, each message next to its field where the form has it."""
        if not hasattr(error, "error_dict"):
            self.add_error(None, error)
        else:
            for name, errors in error.error_dict.items():
                self.add_error(name if name in self.fields else None, errors)
        style_fields(self)


class LoginForm(AuthenticationForm):
    """Django's login form, styled like the others."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        style_fields(self)

    def full_clean(self) -> None:
        super().full_clean()
        style_fields(self)
