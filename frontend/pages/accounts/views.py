"""Users and their roles, for administrators: create, deactivate, reset passwords, assign roles.

A password the console generates is shown once, in the response to the request that set it,
and never stored anywhere it could be shown again.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Exists, OuterRef, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.cache import patch_vary_headers
from django.views.decorators.cache import never_cache
from rest_framework.authtoken.models import Token

from backupconsole import services
from backupconsole.errors import ActionRefused
from backupconsole.filtersets import UserFilterSet
from backupconsole.models import RoleAssignment
from backupconsole.services import scopable_object_types
from frontend.htmx import is_partial
from frontend.pages.accounts.access import require_account_manager
from frontend.pages.accounts.forms import PasswordChoiceForm, RoleForm, UserCreateForm

PAGE_SIZE = 50


def role_summary(assignment: RoleAssignment, names: dict[str, str]) -> dict[str, Any]:
    """A role for display, with what it is limited to ("Virtual machine: tags__name=web")."""
    kinds = ", ".join(names.get(label, label) for label in assignment.object_types)
    lookups = ", ".join(f"{key}={value}" for key, value in assignment.constraints.items())
    scope = f"{kinds}: {lookups}" if lookups else kinds
    return {"assignment": assignment, "role": assignment.role, "scope": scope}


def _users() -> QuerySet[Any]:
    return (
        get_user_model()
        .objects.prefetch_related("role_assignments")
        .annotate(has_token=Exists(Token.objects.filter(user=OuterRef("pk"))))
        .order_by("username")
    )


def _create(request: HttpRequest, form: UserCreateForm) -> tuple[Any, str | None] | None:
    """The new user and the generated password (None when typed), or None on errors."""
    data = form.cleaned_data
    generated = services.generate_password() if data["generate"] else None
    try:
        with transaction.atomic():
            user = services.create_user(
                username=data["username"],
                password=generated or data["password"],
                email=data["email"],
                first_name=data["first_name"],
                last_name=data["last_name"],
                acting_user=request.user,
            )
            if data["role"]:
                services.assign_role(user=user, role=data["role"], acting_user=request.user)
    except ValidationError as exc:
        form.add_service_error(exc)
        return None
    return user, generated


@login_required
@never_cache
def user_list(request: HttpRequest) -> HttpResponse:
    require_account_manager(request)
    form = UserCreateForm(request.POST if request.method == "POST" else None)
    created = None
    if form.is_bound and form.is_valid() and (result := _create(request, form)):
        user, generated = result
        if generated is None:
            messages.success(request, f"User {user.get_username()} created.")
            return redirect("frontend:user", user.pk)
        created = {"user": user, "password": generated}
        form = UserCreateForm()
    filterset = UserFilterSet(request.GET, queryset=_users())
    page = Paginator(filterset.qs, PAGE_SIZE).get_page(request.GET.get("page"))
    names = scopable_object_types()
    context = {
        "form": form,
        "filterset": filterset,
        "page": page,
        "rows": [
            {"user": user, "roles": [role_summary(a, names) for a in user.role_assignments.all()]}
            for user in page
        ],
        "created": created,
        "filtered": any(value for key, value in request.GET.items() if key != "page"),
    }
    partial = is_partial(request)
    template = "frontend/accounts/_user_table.html" if partial else "frontend/accounts/users.html"
    response = render(request, template, context)
    patch_vary_headers(response, ["HX-Request"])
    return response


# --- one user -------------------------------------------------------------------------------


def _set_active(request: HttpRequest, target: Any, active: bool) -> HttpResponse:
    services.set_user_active(target, active, acting_user=request.user)
    verb = "reactivated" if active else "deactivated"
    messages.success(request, f"User {target.get_username()} {verb}.")
    return redirect("frontend:user", target.pk)


def _revoke_role(request: HttpRequest, target: Any) -> HttpResponse:
    pk = request.POST.get("assignment", "")
    assignment = get_object_or_404(
        RoleAssignment.objects.restrict(request.user, "manage"),
        pk=int(pk) if pk.isdigit() else 0,
        user=target,
    )
    services.revoke_role(assignment, acting_user=request.user)
    messages.success(request, f"Role {assignment.get_role_display()} removed.")
    return redirect("frontend:user", target.pk)


def _assign_role(request: HttpRequest, target: Any, form: RoleForm) -> HttpResponse | None:
    if not form.is_valid():
        return None
    try:
        assignment = services.assign_role(
            user=target,
            role=form.cleaned_data["role"],
            object_types=form.cleaned_data["object_types"],
            constraints=form.cleaned_data["constraints"] or {},
            acting_user=request.user,
        )
    except ValidationError as exc:
        form.add_service_error(exc)
        return None
    messages.success(request, f"Role {assignment.get_role_display()} assigned.")
    return redirect("frontend:user", target.pk)


def _reset_password(
    request: HttpRequest, target: Any, form: PasswordChoiceForm
) -> HttpResponse | str | None:
    """A redirect, the generated password to show once, or None when the form has errors."""
    if not form.is_valid():
        return None
    generated = services.generate_password() if form.cleaned_data["generate"] else None
    try:
        services.reset_password(
            target, generated or form.cleaned_data["password"], acting_user=request.user
        )
    except ValidationError as exc:
        form.add_service_error(exc)
        return None
    if generated:
        return generated
    messages.success(request, f"Password of {target.get_username()} changed.")
    return redirect("frontend:user", target.pk)


@login_required
@never_cache
def user_detail(request: HttpRequest, pk: int) -> HttpResponse:
    require_account_manager(request)
    target = get_object_or_404(get_user_model(), pk=pk)
    role_form = RoleForm(prefix="role")
    password_form = PasswordChoiceForm(prefix="password")
    new_password = None
    if request.method == "POST":
        action = request.POST.get("action", "")
        outcome: HttpResponse | str | None
        try:
            if action in ("deactivate", "reactivate"):
                outcome = _set_active(request, target, action == "reactivate")
            elif action == "revoke-role":
                outcome = _revoke_role(request, target)
            elif action == "assign-role":
                role_form = RoleForm(request.POST, prefix="role")
                outcome = _assign_role(request, target, role_form)
            elif action == "reset-password":
                password_form = PasswordChoiceForm(request.POST, prefix="password")
                outcome = _reset_password(request, target, password_form)
            else:
                return HttpResponseBadRequest("Unknown action.")
        except ActionRefused as exc:
            messages.error(request, exc.message)
            return redirect("frontend:user", target.pk)
        if isinstance(outcome, HttpResponse):
            return outcome
        if outcome:
            new_password = outcome
            password_form = PasswordChoiceForm(prefix="password")
    names = scopable_object_types()
    context = {
        "target": target,
        "roles": [role_summary(a, names) for a in target.role_assignments.all()],
        "token_created": Token.objects.filter(user=target)
        .values_list("created", flat=True)
        .first(),
        "role_form": role_form,
        "password_form": password_form,
        "new_password": new_password,
    }
    return render(request, "frontend/accounts/user.html", context)
