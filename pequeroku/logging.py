"""JSON log lines (LOG_FORMAT=json), one object per record."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

_STANDARD = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        payload.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


# A client that goes away (closed tab, dropped network, Ctrl-C on curl) is normal operation,
# whichever server or library notices it first; matched by class name so no server package
# has to be importable here.
DISCONNECT_ERRORS = frozenset(
    {
        "BrokenPipeError",
        "ConnectionResetError",
        "ConnectionAbortedError",
        "ClientDisconnected",  # uvicorn
        "ConnectionClosed",  # websockets (ConnectionClosedOK/Error are subclasses)
        "RequestAborted",  # django
    }
)


def is_client_disconnect(exc: BaseException | None) -> bool:
    """True when ``exc``, or an exception it was raised from, is a client going away."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if any(cls.__name__ in DISCONNECT_ERRORS for cls in type(exc).__mro__):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class DisconnectsAtDebug(logging.Filter):
    """Handler filter: a record whose exception is a client disconnect is logged at DEBUG
    (so only when its logger is enabled for DEBUG), whatever level it was raised at."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.exc_info or not is_client_disconnect(record.exc_info[1]):
            return True
        record.levelno = logging.DEBUG
        record.levelname = logging.getLevelName(logging.DEBUG)
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


class TracebacksOnly(logging.Filter):
    """For ``django.request``: keep its records of unhandled exceptions (the traceback) and
    drop its one-line "Service Unavailable: /path" records, which repeat what
    ``pequeroku.request`` already logged for that request."""

    def filter(self, record: logging.LogRecord) -> bool:
        return bool(record.exc_info)
