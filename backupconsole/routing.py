from django.urls import path

from jobs.consumers import EventsConsumer, RunConsumer

websocket_urlpatterns = [
    path("ws/runs/<int:pk>/", RunConsumer.as_asgi()),
    path("ws/events/", EventsConsumer.as_asgi()),
]
