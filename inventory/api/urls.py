from rest_framework.routers import DefaultRouter

from inventory.api import views

router = DefaultRouter()
router.register("connections", views.ConnectionViewSet)
router.register("objects", views.InventoryObjectViewSet)
router.register("vms", views.VirtualMachineViewSet)
router.register("disks", views.VirtualDiskViewSet)
router.register("tags", views.TagViewSet)
router.register("proxies", views.ProxyViewSet)

urlpatterns = router.urls
