from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from backupconsole.api.views import ObtainTokenView

urlpatterns = [
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/auth/token/", ObtainTokenView.as_view(), name="api-token"),
    path("api/core/", include("backupconsole.api.urls")),
    path("api/inventory/", include("inventory.api.urls")),
    path("api/jobs/", include("jobs.api.urls")),
    path("api/storage/", include("storage.api.urls")),
    path("", include("frontend.urls")),
]
