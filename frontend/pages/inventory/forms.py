"""The connection form: one form whose fields, labels and help depend on the connection kind.

``KIND_FIELDS`` says what each kind asks for; a kind that needs more (a new hypervisor, or the
vSphere connector growing an option) declares the field on ``ConnectionForm`` and lists it there.
The password is write-only: never rendered back, and left empty on edit it keeps the stored one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django import forms

from frontend.forms import ConsoleForm
from inventory.choices import DEFAULT_PORTS, TLS_KINDS, ConnectionKind
from inventory.models import Connection
from inventory.probe import normalize_fingerprint

_FINGERPRINT = re.compile(r"^([0-9A-F]{2}:){31}[0-9A-F]{2}$")
# A fingerprint quoted in a probe or service message ("… SHA-256 AA:BB:…").
FINGERPRINT_IN_TEXT = re.compile(r"\b(?:[0-9A-F]{2}:){31}[0-9A-F]{2}\b")


@dataclass(frozen=True)
class KindFields:
    """The fields a connection kind asks for besides name and kind, and how they read."""

    fields: tuple[str, ...]
    required: frozenset[str] = frozenset()
    secret_required: bool = False  # a new connection of this kind needs a password
    labels: Mapping[str, str] = field(default_factory=dict)
    help: Mapping[str, str] = field(default_factory=dict)


def _tls_kind(address_label: str, username_example: str) -> KindFields:
    """A kind reached over TLS with a user and password, whose certificate can be pinned."""
    return KindFields(
        ("address", "port", "username", "password", "verify_tls", "tls_fingerprint"),
        required=frozenset({"address", "username"}),
        secret_required=True,
        labels={"address": address_label, "username": "User"},
        help={
            "username": f"For example {username_example}.",
            "tls_fingerprint": "SHA-256 of the server's certificate. Once pinned, any other "
            "certificate is refused. Use “Test connection” to read it from the server, check "
            "it, then trust it.",
            "verify_tls": "Without a pinned fingerprint the certificate must be trusted by this "
            "system. Turn off only in a lab: then any certificate is accepted.",
        },
    )


# vSphere (VMware helper): the certificate pinning step works for every TLS kind through
# inventory.probe; logging in with user and password is the vSphere connector's job at sync
# (inventory/vmware/). Fields a vSphere connection needs beyond these go in its entries here.
KIND_FIELDS: dict[str, KindFields] = {
    ConnectionKind.KVM: KindFields(
        ("address", "port", "username"),
        required=frozenset({"address"}),
        labels={
            "address": "libvirt URI, socket or host",
            "port": "SSH port",
            "username": "SSH user",
        },
        help={
            "address": "qemu:///system, a libvirt socket path such as "
            "/var/run/libvirt/libvirt-sock, or a host name the proxy reaches over SSH "
            "(qemu+ssh).",
            "username": "For SSH only; the proxy logs in with its SSH key.",
        },
    ),
    ConnectionKind.VCENTER: _tls_kind("vCenter Server host", "administrator@vsphere.local"),
    ConnectionKind.ESXI: _tls_kind("ESXi host", "root"),
    ConnectionKind.HYPERV: _tls_kind("Hyper-V host (WinRM over HTTPS)", r"DOMAIN\backup"),
    ConnectionKind.XEN_POOL: _tls_kind("Pool master host", "root"),
}
DEFAULT_KIND = ConnectionKind.KVM
ALWAYS = ("name", "kind")
# What a probe needs (it never sends credentials).
PROBE_FIELDS = ("kind", "address", "port", "verify_tls", "tls_fingerprint")


class ConnectionForm(ConsoleForm):
    name = forms.CharField(max_length=100)
    kind = forms.ChoiceField(choices=ConnectionKind.choices, initial=DEFAULT_KIND)
    address = forms.CharField(max_length=255, required=False)
    port = forms.IntegerField(required=False, min_value=1, max_value=65535)
    username = forms.CharField(max_length=150, required=False)
    password = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )
    verify_tls = forms.BooleanField(
        required=False, initial=True, label="Verify the server's certificate"
    )
    tls_fingerprint = forms.CharField(
        max_length=120, required=False, label="Pinned certificate fingerprint (SHA-256)"
    )
    skip_test = forms.BooleanField(
        required=False,
        label="Save without testing",
        help_text="Normally the connection is saved only once the endpoint answered.",
    )

    def __init__(self, *args: Any, connection: Connection | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connection = connection
        self.chosen_kind = self.selected_kind()
        self.layout = KIND_FIELDS[self.chosen_kind]
        for name in list(self.fields):
            if name not in (*ALWAYS, *self.layout.fields, "skip_test"):
                del self.fields[name]
        for name in self.layout.required:
            self.fields[name].required = True
        for name, label in self.layout.labels.items():
            self.fields[name].label = label
        for name, text in self.layout.help.items():
            self.fields[name].help_text = text
        if "port" in self.fields:
            default = DEFAULT_PORTS[ConnectionKind(self.chosen_kind)]
            self.fields["port"].widget.attrs["placeholder"] = str(default)
            self.fields["port"].help_text = f"Empty: {default}."
        if "password" in self.fields:
            stored = connection is not None and connection.has_secret
            self.fields["password"].required = self.layout.secret_required and not stored
            if stored:
                self.fields["password"].help_text = "Stored. Leave empty to keep it."
        self.fields["kind"].widget.attrs["autocomplete"] = "off"
        self.render_ready()

    def switch_kind_from(self, url: str) -> None:
        """Changing the kind re-renders the fields for it through HTMX (GET ``url``). The
        password is never sent along, and the port is left to the new kind's default."""
        self.fields["kind"].widget.attrs.update(
            {
                "hx-get": url,
                "hx-trigger": "change",
                "hx-target": "#connection-fields",
                "hx-swap": "outerHTML",
                "hx-include": "closest form",
                "hx-params": "not password,port,csrfmiddlewaretoken",
            }
        )

    def selected_kind(self) -> str:
        value = self.data.get("kind") if self.is_bound else self.initial.get("kind")
        return str(value) if value in KIND_FIELDS else DEFAULT_KIND

    @property
    def uses_tls(self) -> bool:
        return ConnectionKind(self.chosen_kind) in TLS_KINDS

    def clean_tls_fingerprint(self) -> str:
        value = self.cleaned_data.get("tls_fingerprint", "").strip()
        if not value:
            return ""
        normalized = normalize_fingerprint(value)
        if not _FINGERPRINT.match(normalized):
            raise forms.ValidationError(
                "A SHA-256 fingerprint is 32 bytes in hexadecimal, e.g. AB:CD:…:EF."
            )
        return normalized

    def clean_address(self) -> str:
        value: str = self.cleaned_data.get("address", "").strip()
        if self.chosen_kind == ConnectionKind.KVM and value.startswith("qemu"):
            if not re.match(r"^qemu(\+[a-z]+)?://", value):
                raise forms.ValidationError("A libvirt URI looks like qemu:///system.")
        elif value and any(ch.isspace() for ch in value):
            raise forms.ValidationError("A host name or address has no spaces.")
        return value

    def service_data(self) -> tuple[dict[str, Any], str | None]:
        """The connection's fields for the inventory services, and the secret to store (None
        keeps the stored one)."""
        data = self.cleaned_data
        fields = self.layout.fields
        values: dict[str, Any] = {
            "name": data["name"],
            "kind": self.chosen_kind,
            "address": data.get("address", ""),
            "port": data.get("port"),
            # Fields the kind does not ask for are reset, so a kind change leaves nothing behind.
            "username": data.get("username", ""),
            "verify_tls": data.get("verify_tls", False) if "verify_tls" in fields else True,
            "tls_fingerprint": data.get("tls_fingerprint", ""),
        }
        if "password" not in fields:
            return values, ""  # this kind has no password: none is kept
        password: str = data.get("password", "")
        if password:
            return values, password
        return values, None if self.connection is not None else ""

    def probe_target(self) -> Connection | None:
        """An unsaved connection to probe, or None when a field the probe needs is invalid."""
        self.is_valid()
        if any(name in self.errors for name in PROBE_FIELDS):
            return None
        data = self.cleaned_data
        return Connection(
            kind=self.chosen_kind,
            address=data.get("address", ""),
            port=data.get("port") or DEFAULT_PORTS[ConnectionKind(self.chosen_kind)],
            verify_tls=data.get("verify_tls", True) if self.uses_tls else True,
            tls_fingerprint=data.get("tls_fingerprint", "") if self.uses_tls else "",
        )


def initial_for(connection: Connection) -> dict[str, Any]:
    """The edit form's initial values: everything but the secret."""
    return {
        "name": connection.name,
        "kind": connection.kind,
        "address": connection.address,
        "port": connection.port,
        "username": connection.username,
        "verify_tls": connection.verify_tls,
        "tls_fingerprint": connection.tls_fingerprint,
    }
