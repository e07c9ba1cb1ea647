"""Forms of the repository pages; storage/services.py decides what is valid beyond the types."""

from __future__ import annotations

from typing import Any

from django import forms
from django.db.models import QuerySet

from frontend.forms import ConsoleForm
from jobs.models import ProtectionPolicy
from storage.choices import RepositoryKind
from storage.models import Repository

S3_FIELDS = ("s3_endpoint", "s3_region", "s3_prefix", "s3_access_key", "secret")


def _password(label: str, help_text: str = "", *, missing: str) -> forms.CharField:
    # render_value=False: a secret typed once is never sent back, not even after an error.
    return forms.CharField(
        label=label,
        strip=False,
        help_text=help_text,
        error_messages={"required": missing},
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )


class RepositoryForm(ConsoleForm):
    name = forms.CharField(max_length=100)
    kind = forms.ChoiceField(
        choices=RepositoryKind.choices, initial=RepositoryKind.FILESYSTEM, label="Kind"
    )
    location = forms.CharField(
        max_length=1024,
        label="Directory or bucket",
        help_text="An absolute directory path on the console's host (local or mounted), or the "
        "bucket name for S3. If a repository is there already, it is attached and its restore "
        "points are imported.",
    )
    s3_endpoint = forms.URLField(
        required=False,
        assume_scheme="https",
        label="S3 endpoint",
        help_text="Empty for AWS; e.g. https://minio.example:9000.",
    )
    s3_region = forms.CharField(max_length=64, required=False, label="S3 region")
    s3_prefix = forms.CharField(max_length=255, required=False, label="Prefix in the bucket")
    s3_access_key = forms.CharField(
        max_length=255,
        label="S3 access key",
        error_messages={"required": "An S3 repository needs an access key."},
    )
    secret = _password(
        "S3 secret key",
        "Stored encrypted; never shown again.",
        missing="An S3 repository needs a secret key.",
    )
    encryption_enabled = forms.BooleanField(
        required=False, initial=True, label="Encrypt the repository (AES-256-GCM)"
    )
    passphrase = _password(
        "Passphrase",
        "Protects the repository's key. Keep a copy apart: restoring without the console needs "
        "it. Stored encrypted; never shown again.",
        missing="An encrypted repository needs a passphrase.",
    )
    passphrase_again = _password("Passphrase again", missing="Type the passphrase again.")
    compression_level = forms.IntegerField(
        min_value=1,
        max_value=19,
        initial=1,
        label="Compression level (zstd)",
        help_text="1 is fastest; higher levels save space at the cost of backup speed.",
    )
    immutability_days = forms.IntegerField(
        min_value=0,
        initial=0,
        label="Immutability (days)",
        help_text="Restore points cannot be deleted for this many days; 0 turns it off.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.is_bound:
            # The S3 fields are required for S3 only, the passphrase with encryption only (the
            # page hides them otherwise); unbound, they show as required, as they are when shown.
            s3 = self.data.get("kind") == RepositoryKind.S3
            encrypted = self.fields["encryption_enabled"].widget.value_from_datadict(
                self.data, self.files, self.add_prefix("encryption_enabled")
            )
            for name in ("s3_access_key", "secret"):
                self.fields[name].required = s3
            for name in ("passphrase", "passphrase_again"):
                self.fields[name].required = bool(encrypted)

    def clean_name(self) -> str:
        name: str = self.cleaned_data["name"].strip()
        if Repository.objects.filter(name__iexact=name).exists():
            raise forms.ValidationError("A repository with this name exists already.")
        return name

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("passphrase", "") != data.get("passphrase_again", ""):
            self.add_error("passphrase_again", "The two passphrases differ.")
        if data.get("kind") != RepositoryKind.S3:
            for name in S3_FIELDS:  # hidden for a directory: whatever was typed does not apply
                data[name] = ""
        return data

    def service_data(self) -> dict[str, Any]:
        """The fields create_repository stores (the secrets go as their own arguments)."""
        skipped = {"secret", "passphrase", "passphrase_again"}
        return {k: v for k, v in self.cleaned_data.items() if k not in skipped}


class JobForm(ConsoleForm):
    """The options of one maintenance job. A job with a choice (a policy, a target) names its
    select in ``select``; ``choices`` narrows it to the rows the user may pick."""

    select: str | None = None

    def __init__(self, *args: Any, choices: QuerySet[Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.select:
            field = self.fields[self.select]
            field.queryset = choices if choices is not None else field.queryset.none()  # type: ignore[attr-defined]
            field.widget.attrs["class"] = "form-select form-select-sm w-auto"

    def options(self) -> dict[str, Any]:
        return {}


class VerifyForm(JobForm):
    deep = forms.BooleanField(
        required=False,
        label="Deep",
        help_text="Read, decrypt and re-hash every chunk (slow, thorough). A fast verify checks "
        "that every chunk is present.",
    )

    def options(self) -> dict[str, Any]:
        return {"deep": self.cleaned_data["deep"]}


class PruneForm(JobForm):
    select = "policy"
    policy = forms.ModelChoiceField(
        queryset=ProtectionPolicy.objects.all(),
        required=False,
        empty_label="All policies writing here",
        help_text="Applies the policies' retention; the next garbage collection frees the data.",
    )

    def options(self) -> dict[str, Any]:
        policy = self.cleaned_data["policy"]
        return {"policy": policy.pk} if policy else {}


class GcForm(JobForm):
    pass


class CopyForm(JobForm):
    select = "target"
    target = forms.ModelChoiceField(
        queryset=Repository.objects.all(),
        label="Copy to",
        empty_label=None,
        help_text="Copies the restore points the target lacks, sending only chunks it lacks.",
    )

    def options(self) -> dict[str, Any]:
        return {"target": self.cleaned_data["target"].pk}
