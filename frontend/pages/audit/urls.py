from django.urls import URLPattern, URLResolver, path

from frontend.pages.audit import views

urlpatterns: list[URLPattern | URLResolver] = [
    path("audit/", views.audit_log, name="audit"),
    path("audit/export.csv", views.audit_export, name="audit-export"),
]
