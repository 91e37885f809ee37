"""The AI assistant socket."""

from django.urls import path

from ai_services.consumers import AIConsumer

websocket_urlpatterns: list = [
    path("ws/ai/<int:pk>/", AIConsumer.as_asgi()),
]
