"""API tokens: each user creates, replaces and revokes their own; administrators revoke anyone's.

A token's key is shown once, in the response to the request that created it. Nothing else puts
a key into a template: the lists carry user names and dates only (a token's primary key *is*
its key, so not even that).
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from rest_framework.authtoken.models import Token

from backupconsole import services
from frontend.pages.accounts.access import manages_accounts


def _revoke(request: HttpRequest, manager: bool) -> HttpResponse:
    owner: Any = request.user
    owner_pk = request.POST.get("user", "")
    if owner_pk and owner_pk != str(request.user.pk):
        if not manager:
            raise PermissionDenied("You can only revoke your own token.")
        owner = get_object_or_404(get_user_model(), pk=int(owner_pk) if owner_pk.isdigit() else 0)
    if services.revoke_token(owner, acting_user=request.user):
        messages.success(request, f"The API token of {owner.get_username()} was revoked.")
    else:
        messages.info(request, f"{owner.get_username()} had no API token.")
    return redirect("frontend:tokens")


@login_required
@never_cache
def token_list(request: HttpRequest) -> HttpResponse:
    user: Any = request.user  # signed in (login_required)
    manager = manages_accounts(user)
    secret = None
    if request.method == "POST":
        action = request.POST.get("action", "")
        if action == "revoke":
            return _revoke(request, manager)
        if action != "create":
            return HttpResponseBadRequest("Unknown action.")
        # Only for oneself: nobody else should ever see a user's key.
        secret = services.rotate_token(user, acting_user=user).key
    context = {
        "secret": secret,
        "own_created": Token.objects.filter(user=user).values_list("created", flat=True).first(),
        "manager": manager,
        "others": list(
            Token.objects.exclude(user=user)
            .order_by("user__username")
            .values("user_id", "user__username", "user__is_active", "created")
        )
        if manager
        else [],
    }
    return render(request, "frontend/accounts/tokens.html", context)
