"""The AI assistant socket."""

websocket_urlpatterns: list = []
