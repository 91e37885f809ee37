"""WebSocket routes (console, editor, AI); each app contributes its own patterns."""

from ai_services.routing import websocket_urlpatterns as ai_patterns
from vm_manager.routing import websocket_urlpatterns as vm_patterns

websocket_urlpatterns = [*vm_patterns, *ai_patterns]
