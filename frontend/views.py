from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from frontend.dashboard import dashboard_context
from frontend.forms import LoginForm


class LoginView(auth_views.LoginView):
    template_name = "frontend/login.html"
    authentication_form = LoginForm
    redirect_authenticated_user = True


class LogoutView(auth_views.LogoutView):
    """POST only (Django's own rule): a link or an image cannot sign the user out."""


@login_required
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "frontend/home.html", dashboard_context(request))
