from django.urls import path

from frontend.pages.policies import views

urlpatterns = [
    path("policies/", views.policy_list, name="policies"),
    path("policies/new/", views.policy_new, name="policy-new"),
    path("policies/<int:pk>/", views.policy_edit, name="policy"),
    path("policies/<int:pk>/run/", views.policy_run, name="policy-run"),
    path("policies/<int:pk>/enabled/", views.policy_enabled, name="policy-enabled"),
    path("policies/preview/rules/", views.rule_preview, name="policy-rule-preview"),
    path("policies/preview/retention/", views.retention_preview, name="policy-retention-preview"),
    path("policies/preview/schedules/", views.schedule_preview, name="policy-schedule-preview"),
]
