from rest_framework.routers import DefaultRouter

from storage.api import views

router = DefaultRouter()
router.register("repositories", views.RepositoryViewSet)
router.register("restore-points", views.RestorePointViewSet)
router.register("restore-point-disks", views.RestorePointDiskViewSet)

urlpatterns = router.urls
