from django.urls import URLPattern, URLResolver, path

from frontend.pages.inventory import connections, proxies, views, vms

urlpatterns: list[URLPattern | URLResolver] = [
    path("inventory/", views.inventory, name="inventory"),
    path("inventory/connections/new/", connections.connection_new, name="connection-new"),
    path("inventory/connections/probe/", connections.connection_probe, name="connection-probe"),
    path("inventory/connections/<int:pk>/", connections.connection_edit, name="connection"),
    path(
        "inventory/connections/<int:pk>/status/",
        connections.connection_status,
        name="connection-status",
    ),
    path(
        "inventory/connections/<int:pk>/test/", connections.connection_test, name="connection-test"
    ),
    path(
        "inventory/connections/<int:pk>/sync/", connections.connection_sync, name="connection-sync"
    ),
    path(
        "inventory/connections/<int:pk>/delete/",
        connections.connection_delete,
        name="connection-delete",
    ),
    path("inventory/vms/<int:pk>/", vms.vm_detail, name="vm"),
    path("inventory/vms/<int:pk>/backup/", vms.vm_backup, name="vm-backup"),
    path("inventory/vms/<int:pk>/reset-cbt/", vms.vm_reset_cbt, name="vm-reset-cbt"),
    path("proxies/", proxies.proxy_list, name="proxies"),
]
