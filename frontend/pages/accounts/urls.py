from django.urls import URLPattern, URLResolver, path

from frontend.pages.accounts import tokens, views

urlpatterns: list[URLPattern | URLResolver] = [
    path("users/", views.user_list, name="users"),
    path("users/<int:pk>/", views.user_detail, name="user"),
    path("tokens/", tokens.token_list, name="tokens"),
]
