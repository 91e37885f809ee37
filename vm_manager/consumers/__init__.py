"""The IDE's sockets: ``ConsoleConsumer`` (``/ws/containers/{pk}/``) and ``EditorConsumer``
(``/ws/fs/{pk}/``). Thin: access, framing, limits and error events here; behaviour lives in
``vm_manager.console`` and ``vm_manager.editor``."""

from .console import ConsoleConsumer
from .editor import EditorConsumer

__all__ = ["ConsoleConsumer", "EditorConsumer"]
