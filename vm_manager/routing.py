"""Console and editor sockets."""

websocket_urlpatterns: list = []
