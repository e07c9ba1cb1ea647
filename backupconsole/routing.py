from django.urls import path

from frontend.pages.runs.routing import websocket_urlpatterns as console_runs_patterns
from jobs.consumers import EventsConsumer, RunConsumer

websocket_urlpatterns = [
    path("ws/runs/<int:pk>/", RunConsumer.as_asgi()),
    path("ws/events/", EventsConsumer.as_asgi()),
    # The console's HTML fragments for the HTMX ws extension (frontend/pages/runs/consumers.py).
    *console_runs_patterns,
]
