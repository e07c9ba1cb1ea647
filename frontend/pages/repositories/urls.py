from django.urls import URLPattern, URLResolver, path

from frontend.pages.repositories import views

urlpatterns: list[URLPattern | URLResolver] = [
    path("repositories/", views.repository_list, name="repositories"),
    path("repositories/new/", views.repository_new, name="repository-new"),
    path("repositories/<int:pk>/", views.repository_detail, name="repository"),
    path("repositories/<int:pk>/jobs/<str:kind>/", views.repository_job, name="repository-job"),
    path(
        "repositories/<int:pk>/points/<int:point_pk>/protect/",
        views.restore_point_protect,
        name="restore-point-protect",
    ),
    path(
        "repositories/<int:pk>/points/<int:point_pk>/delete/",
        views.restore_point_delete,
        name="restore-point-delete",
    ),
]
