"""Console and editor sockets."""

from django.urls import re_path

from vm_manager.ide import ConsoleConsumer, EditorConsumer

websocket_urlpatterns = [
    re_path(r"^ws/containers/(?P<pk>\d+)/$", ConsoleConsumer.as_asgi()),
    re_path(r"^ws/fs/(?P<pk>\d+)/$", EditorConsumer.as_asgi()),
]
