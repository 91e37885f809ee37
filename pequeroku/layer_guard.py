"""Which channel-layer messages a consumer accepts: its own event types, never a client frame.

Entry point: ``channel_layer_accepts(*types)``, assigned to a consumer's ``channel_receive``::

    class EditorConsumer(...):
        channel_receive = channel_layer_accepts("fs.broadcast")

Channels hands a consumer the messages of its socket (``websocket.receive`` ...) and of its
channel-layer channel (group broadcasts) through the same dispatch, by ``type``. Whoever can
write to the layer could otherwise send ``websocket.receive`` and be taken for the browser (write
files through an open editor, prompt the AI in the victim's name), or name any method of the
consumer as a type (``close``, ``connect``) and call it. Channels sets ``channel_receive`` when a
consumer starts; this descriptor wraps what it sets, so messages that arrive through the layer
are dispatched only when their type is listed, and messages the layer could not authenticate
(channels-redis ``symmetric_encryption_keys``: a forged or tampered message fails to decrypt) are
dropped instead of ending the socket. Each refusal is logged, without the message's content.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

logger = logging.getLogger(__name__)

Receive = Callable[[], Awaitable[dict[str, Any]]]

try:
    from cryptography.fernet import InvalidToken
except ImportError:  # pragma: no cover - channels-redis[cryptography] is a dependency
    InvalidToken = ()  # type: ignore[assignment,misc]


class _AcceptedLayerMessages:
    def __init__(self, types: frozenset[str]) -> None:
        self.types = types
        self.attribute = "_channel_receive"

    def __set_name__(self, owner: type, name: str) -> None:
        self.attribute = f"_guarded_{name}"

    def __get__(self, consumer: Any, owner: type | None = None) -> Any:
        if consumer is None:
            return self
        return consumer.__dict__[self.attribute]

    def __set__(self, consumer: Any, receive: Receive) -> None:
        consumer.__dict__[self.attribute] = self._guard(consumer, receive)

    def _guard(self, consumer: Any, receive: Receive) -> Receive:
        accepted = self.types

        async def guarded() -> dict[str, Any]:
            while True:
                try:
                    message = await receive()
                except InvalidToken:
                    logger.warning(
                        "refused a channel-layer message to %s: it failed authentication",
                        type(consumer).__name__,
                    )
                    continue
                kind = message.get("type") if isinstance(message, dict) else None
                if kind in accepted:
                    return message
                logger.warning(
                    "refused a channel-layer message of type %.80r to %s",
                    kind,
                    type(consumer).__name__,
                )

        return guarded


def channel_layer_accepts(*types: str) -> Any:
    """A ``channel_receive`` that lets only ``types`` through from the channel layer.

    ``websocket.*`` (what only the browser may send) can never be listed.
    """
    if any(kind.startswith("websocket.") for kind in types):
        raise ValueError("websocket.* messages come from the client, never from the layer")
    return _AcceptedLayerMessages(frozenset(types))
