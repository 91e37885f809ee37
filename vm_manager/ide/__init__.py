"""The IDE's sockets and what they do: ``ConsoleConsumer`` (``/ws/containers/{pk}/``),
``EditorConsumer`` (``/ws/fs/{pk}/``) and their shared base. Thin consumers: access, framing,
limits and error events in ``base``; terminal sessions in ``terminals``; the editor's file
behaviour in ``files`` (on top of ``vm_manager.guest``)."""

from .console import ConsoleConsumer
from .editor import EditorConsumer

__all__ = ["ConsoleConsumer", "EditorConsumer"]
