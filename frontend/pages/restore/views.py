"""The restore wizard page: one URL, the step and the choices so far in the query string; the
final POST starts the restore through storage.services.start_restore."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from backupconsole.errors import ActionRefused
from backupconsole.permissions import may
from frontend.pages.restore.wizard import NAMES, STEPS, RestoreWizard
from frontend.templatetags.console_tags import console_url
from storage.models import RestorePoint
from storage.services import start_restore


@login_required
@require_http_methods(["GET", "POST"])
def restore_wizard(request: HttpRequest) -> HttpResponse:
    if not may(request.user, "restore", RestorePoint):
        raise PermissionDenied("Your role does not allow restores.")
    if request.method == "POST":
        wizard = RestoreWizard(request.user, request.POST)
        step, form = wizard.resolve("confirm")
        if step == "summary" and not form.errors:
            try:
                run = start_restore(
                    wizard.values["point"], options=wizard.options, acting_user=request.user
                )
            except ActionRefused as exc:
                step, form = wizard.refuse(exc)
            else:
                url = console_url("run", run.pk)
                if url:
                    return redirect(url)
                messages.success(request, f"Restore run #{run.pk} queued.")
                return redirect("frontend:restore")
    else:
        wizard = RestoreWizard(request.user, request.GET)
        requested = request.GET.get("step")
        step, form = wizard.resolve(requested if requested in NAMES else wizard.first_missing())
    index = NAMES.index(step)
    context = {
        "wizard": wizard,
        "step": step,
        "steps": [
            {"name": s.name, "title": s.title, "number": i + 1, "link": wizard.link(s.name)}
            for i, s in enumerate(STEPS)
        ],
        "index": index,
        "form": form.render_ready(),
        "values": wizard.values,
        "carried": wizard.carried(step),
        "next_step": NAMES[index + 1] if index + 1 < len(NAMES) else None,
        "back_link": wizard.link(NAMES[index - 1]) if index else None,
    }
    if step == "vm":
        search = wizard.vm_search()
        context["vm_total"] = search.qs.count()
        context["vm_choices"] = list(search.qs[:50])
        context["q"] = request.GET.get("q", "")
    elif step == "point":
        context["points"] = list(wizard.points())
    elif step == "what":
        context["disks"] = list(wizard.values["point"].disks.all())
        context["whole_vm_possible"] = wizard.whole_vm_possible()
        context["whole_vm_unavailable"] = wizard.whole_vm_unavailable()
    elif step == "where":
        context["plan"] = wizard.plan()
    elif step == "summary":
        context["options"] = wizard.options
        context["plan"] = wizard.plan()
    return render(request, "frontend/restore/wizard.html", context)
