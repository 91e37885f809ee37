"""ASGI entry point: HTTP through Django (bodies limited before it reads them), WebSockets
through Channels with session auth and the Origin check."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pequeroku.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from pequeroku.body_limit import BodySizeLimit  # noqa: E402
from pequeroku.db_errors import SocketGuard  # noqa: E402
from pequeroku.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": BodySizeLimit(django_asgi_app),
        "websocket": SocketGuard(  # database or Redis down: close 4503, not a 500
            AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
        ),
    }
)
