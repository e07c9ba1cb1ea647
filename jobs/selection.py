"""Resolve a policy's selection (explicit VMs and dynamic rules) to virtual machines."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db.models import Q, QuerySet

from inventory.models import VirtualMachine
from jobs.choices import RuleKind
from jobs.models import ProtectionPolicy, SelectionRule


def _glob_regex(pattern: str) -> str:
    """A shell-style pattern (``web-*``, ``db-?``) as an anchored, case-insensitive regex."""
    out = []
    for ch in pattern:
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        else:
            out.append("\\" + ch if not ch.isalnum() else ch)
    return "^" + "".join(out) + "$"


def rule_q(rule: SelectionRule) -> Q:
    value = rule.value
    if rule.kind == RuleKind.TAG:
        return Q(tags__name=value)
    if rule.kind == RuleKind.FOLDER:
        return Q(folder__name=value)
    if rule.kind == RuleKind.CLUSTER:
        return Q(cluster__name=value)
    if rule.kind == RuleKind.HOST:
        return Q(host__name=value)
    if rule.kind == RuleKind.CONNECTION:
        return Q(connection__name=value)
    if rule.kind == RuleKind.NAME_PATTERN:
        return Q(name__iregex=_glob_regex(value))
    raise ValueError(f"unknown rule kind {rule.kind!r}")


def resolve_selection(policy: ProtectionPolicy) -> QuerySet[VirtualMachine]:
    """The VMs the policy protects now: explicit or included by a rule, minus the excluded."""
    return resolve(
        vms=policy.vms.values("pk"),
        excluded_vms=policy.excluded_vms.values("pk"),
        rules=list(policy.rules.all()),
    )


def resolve(
    *,
    vms: Iterable[Any],
    excluded_vms: Iterable[Any],
    rules: Iterable[SelectionRule],
) -> QuerySet[VirtualMachine]:
    """The same resolution for a selection not saved yet (the policy form's live preview):
    ``vms``/``excluded_vms`` are VMs, primary keys or a ``values("pk")`` queryset; ``rules`` may
    be unsaved ``SelectionRule`` instances."""
    rules = list(rules)
    include = Q(pk__in=vms)
    for rule in rules:
        if not rule.exclude:
            include |= rule_q(rule)
    selected = VirtualMachine.objects.filter(include, present=True)
    excluded_pks = set(
        VirtualMachine.objects.filter(pk__in=excluded_vms).values_list("pk", flat=True)
    )
    for rule in rules:
        if rule.exclude:
            excluded_pks |= set(
                VirtualMachine.objects.filter(rule_q(rule)).values_list("pk", flat=True)
            )
    return VirtualMachine.objects.filter(
        pk__in=selected.exclude(pk__in=excluded_pks).values("pk")
    ).order_by("name", "pk")
