from rest_framework.routers import DefaultRouter

from jobs.api import views

router = DefaultRouter()
router.register("policies", views.ProtectionPolicyViewSet)
router.register("runs", views.JobRunViewSet)
router.register("tasks", views.RunTaskViewSet)
router.register("logs", views.RunLogViewSet)

urlpatterns = router.urls
