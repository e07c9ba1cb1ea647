from rest_framework.routers import DefaultRouter

from backupconsole.api import views

router = DefaultRouter()
router.register("audit-events", views.AuditEventViewSet)
router.register("role-assignments", views.RoleAssignmentViewSet)
router.register("users", views.UserViewSet)

urlpatterns = router.urls
