from django.urls import URLPattern, URLResolver, path

from . import views

urlpatterns: list[URLPattern | URLResolver] = [
    path("runs/", views.run_list, name="runs"),
    path("runs/running/", views.running, name="runs-running"),
    path("runs/<int:pk>/", views.run_detail, name="run"),
    path("runs/<int:pk>/live/", views.run_live, name="run-live"),
    path("runs/<int:pk>/row/", views.run_row, name="run-row"),
    path("runs/<int:pk>/cancel/", views.run_cancel, name="run-cancel"),
]
