"""Template context shared by every console page."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import models
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse

from backupconsole.models import AuditEvent, RoleAssignment
from backupconsole.permissions import may
from inventory.models import Connection, Proxy, VirtualMachine
from jobs.models import JobRun, ProtectionPolicy
from storage.models import Repository, RestorePoint


@dataclass(frozen=True)
class NavEntry:
    key: str
    label: str
    icon: str  # a bootstrap-icons name
    # Shown when the user may view at least one of these; an empty tuple means every signed-in
    # user sees the entry.
    models: tuple[type[models.Model], ...]
    # Where the entry points until a console page named "frontend:<key>" exists: a URL name
    # plus an optional fragment, or a literal path when the name cannot be reversed.
    fallback: tuple[str, str] = ("frontend:home", "")
    # The action the user needs on one of ``models`` ("manage" for administrators' pages).
    action: str = "view"


NAV_ENTRIES = (
    NavEntry("home", "Dashboard", "speedometer2", ()),
    NavEntry(
        "inventory",
        "Inventory",
        "hdd-network",
        (Connection, VirtualMachine),
        ("frontend:home", "#inventory"),
    ),
    NavEntry(
        "policies", "Policies", "shield-check", (ProtectionPolicy,), ("frontend:home", "#policies")
    ),
    NavEntry("runs", "Runs", "play-circle", (JobRun,), ("frontend:home", "#runs")),
    NavEntry("restore", "Restore", "arrow-counterclockwise", (RestorePoint,), action="restore"),
    NavEntry(
        "repositories",
        "Repositories",
        "database",
        (Repository,),
        ("frontend:home", "#repositories"),
    ),
    NavEntry("proxies", "Proxies", "cpu", (Proxy,), ("frontend:home", "#proxies")),
    NavEntry("audit", "Audit log", "journal-text", (AuditEvent,), ("/api/core/audit-events/", "")),
    NavEntry("users", "Users", "people", (RoleAssignment,), action="manage"),
    NavEntry("api-docs", "API docs", "code-slash", (), ("api-docs", "")),
)


def _url(entry: NavEntry) -> str:
    try:
        return reverse(f"frontend:{entry.key}")
    except NoReverseMatch:
        pass
    name, fragment = entry.fallback
    try:
        return reverse(name) + fragment
    except NoReverseMatch:
        return name + fragment


def navigation(request: HttpRequest) -> dict[str, Any]:
    """The navigation entries ``request.user`` may see (none for an anonymous user)."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"nav_items": []}
    match = getattr(request, "resolver_match", None)
    current = match.view_name if match else None
    items = [
        {
            "key": entry.key,
            "label": entry.label,
            "icon": entry.icon,
            "url": _url(entry),
            "active": current == f"frontend:{entry.key}",
        }
        for entry in NAV_ENTRIES
        if not entry.models or any(may(user, entry.action, model) for model in entry.models)
    ]
    return {"nav_items": items}
