from django.urls import path

from frontend.pages.restore import views

urlpatterns = [
    path("restore/", views.restore_wizard, name="restore"),
]
