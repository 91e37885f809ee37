"""WebSocket routes (console, editor, AI); each app contributes its own patterns."""

websocket_urlpatterns: list = []
