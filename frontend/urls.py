from django.urls import include, path

from frontend import views

app_name = "frontend"

# Each console area keeps its own URL module; names stay in the "frontend" namespace.
AREAS = ("inventory", "policies", "runs", "restore", "repositories", "audit", "accounts")

urlpatterns = [
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", views.LogoutView.as_view(), name="logout"),
    path("", views.home, name="home"),
    *(path("", include(f"frontend.pages.{area}.urls")) for area in AREAS),
]
