"""ASGI entry point: HTTP through Django (bodies limited before it reads them; the whole sync
request in one thread call, ``pequeroku.http_handler``), WebSockets through Channels with
session auth and the Origin check; the lifespan's shutdown writes deferred audit rows."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pequeroku.settings")
django.setup(set_prefix=False)

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402

from pequeroku.body_limit import BodySizeLimit  # noqa: E402
from pequeroku.db_errors import SocketGuard  # noqa: E402
from pequeroku.http_handler import ThreadedASGIHandler  # noqa: E402
from pequeroku.lifespan import lifespan  # noqa: E402
from pequeroku.routing import websocket_urlpatterns  # noqa: E402

django_asgi_app = ThreadedASGIHandler(settings.HTTP_THREADS)

application = ProtocolTypeRouter(
    {
        "http": BodySizeLimit(django_asgi_app),
        "lifespan": lifespan,
        "websocket": SocketGuard(  # database or Redis down: close 4503, not a 500
            AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
        ),
    }
)
