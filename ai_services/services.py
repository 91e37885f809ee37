"""Database rules of the AI assistant: access, daily uses, usage rows, memory.

Entry points: ``ai_container_for_user``, ``ai_uses_left``, ``ai_turn_begin``,
``ai_turn_complete``, ``ai_turn_abort``, ``ai_memory_get``, ``ai_memory_clear``,
``memory_bounded``.

Daily uses are spent atomically across sockets and workers: ``ai_turn_begin`` locks the user's
quota row, counts today's AIUsageLog rows (UTC day) and inserts this turn's row before the
provider is called, so a second socket of the same user waits for the lock and sees the row.
An answered turn fills the row in (``ai_turn_complete``). A turn that ends early
(``ai_turn_abort``: provider failure, timeout, the socket went away) gives the use back only if
the provider never answered and no tool ran; once it had streamed anything or a tool had run,
the use stays spent and the row records what was produced, whatever the client does. Nothing
lives in process memory: every turn reads the memory row afresh and appends to it under a row
lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction

from ai_services.agents import AgentAnswer, ChatMessage
from ai_services.errors import AIContainerMissing, AIContainerNotAllowed, AINoUsesLeft
from ai_services.utils import ProviderConfig, provider_config
from internal_config.models import AIMemory, AIUsageLog
from vm_manager.errors import ContainerMissing, ContainerNotVisible
from vm_manager.models import Container, ResourceQuota
from vm_manager.selectors import live_visible_container

# Memory keeps the newest turns within both bounds; older turns are dropped whole (a summary
# would cost a provider call, i.e. a use, on a turn the user did not ask for).
MAX_MEMORY_MESSAGES = 20
MAX_MEMORY_CHARS = 24_000


@dataclass
class TurnStart:
    usage_log_id: int
    history: list[ChatMessage]
    provider: ProviderConfig
    container: Container


def ai_container_for_user(user: Any, container_pk: int) -> Container:
    """The live container ``container_pk`` if ``user`` may use its assistant."""
    try:
        return live_visible_container(user, container_pk)
    except ContainerNotVisible:
        raise AIContainerNotAllowed() from None
    except ContainerMissing:
        raise AIContainerMissing() from None


def ai_uses_left(user: Any) -> int:
    quota = ResourceQuota.objects.filter(user_id=user.pk).first()
    return quota.ai_uses_left_today() if quota is not None else 0


def memory_bounded(messages: list[ChatMessage]) -> list[ChatMessage]:
    """The newest messages within ``MAX_MEMORY_MESSAGES`` and ``MAX_MEMORY_CHARS``.

    Dropping goes two messages (one user/assistant turn) at a time from the oldest end so the
    memory never starts with an orphaned answer.
    """
    kept = list(messages)
    while kept and (
        len(kept) > MAX_MEMORY_MESSAGES or sum(len(m["content"]) for m in kept) > MAX_MEMORY_CHARS
    ):
        kept = kept[2:] if len(kept) >= 2 else []
    return kept


def _clean_memory(raw: Any) -> list[ChatMessage]:
    if not isinstance(raw, list):
        return []
    return [
        ChatMessage(role=item["role"], content=item["content"])
        for item in raw
        if isinstance(item, dict)
        and item.get("role") in ("user", "assistant")
        and isinstance(item.get("content"), str)
    ]


def ai_memory_get(user: Any, container_id: int) -> list[ChatMessage]:
    raw = (
        AIMemory.objects.filter(user_id=user.pk, container_id=container_id)
        .values_list("memory", flat=True)
        .first()
    )
    return _clean_memory(raw)


@transaction.atomic
def ai_memory_clear(user: Any, container_id: int) -> None:
    AIMemory.objects.filter(user_id=user.pk, container_id=container_id).update(memory=[])


@transaction.atomic
def ai_turn_begin(user: Any, container_pk: int, prompt: str) -> TurnStart:
    """Reserve one of today's uses and gather what the turn needs, in one transaction.

    Raises ``AINoUsesLeft`` (nothing written) when the day's uses are spent, and the access
    errors when the container went away or out of reach since the socket connected.
    """
    container = ai_container_for_user(user, container_pk)
    quota = ResourceQuota.objects.select_for_update().filter(user_id=user.pk).first()
    if quota is None or quota.ai_uses_left_today() <= 0:
        raise AINoUsesLeft()
    log = AIUsageLog.objects.create(user_id=user.pk, container=container, query=prompt)
    return TurnStart(
        usage_log_id=log.pk,
        history=ai_memory_get(user, container.pk),
        provider=provider_config(),
        container=container,
    )


@transaction.atomic
def ai_turn_complete(
    user: Any, container_id: int, usage_log_id: int, prompt: str, answer: AgentAnswer
) -> tuple[list[ChatMessage], int]:
    """Record the answered turn on its usage row and append it to memory.

    Returns (the memory now stored, uses left today).
    """
    AIUsageLog.objects.filter(pk=usage_log_id).update(
        response=answer.text,
        model=answer.model[:200],
        prompt_tokens=answer.prompt_tokens,
        completion_tokens=answer.completion_tokens,
    )
    memory, _ = AIMemory.objects.select_for_update().get_or_create(
        user_id=user.pk, container_id=container_id
    )
    stored = memory_bounded(
        [
            *_clean_memory(memory.memory),
            ChatMessage(role="user", content=prompt),
            ChatMessage(role="assistant", content=answer.text),
        ]
    )
    memory.memory = stored
    memory.save(update_fields=["memory", "updated_at"])
    return stored, ai_uses_left(user)


@transaction.atomic
def ai_turn_abort(user: Any, usage_log_id: int, partial: AgentAnswer | None = None) -> int:
    """End a turn that got no complete answer; returns uses left today.

    The reserved use goes back unless ``partial`` shows the turn was spent (the provider
    streamed output or a tool ran): then its row keeps the text and tokens seen so far.
    """
    rows = AIUsageLog.objects.filter(pk=usage_log_id, user_id=user.pk)
    if partial is not None and partial.spent:
        rows.update(
            response=partial.text,
            model=partial.model[:200],
            prompt_tokens=partial.prompt_tokens,
            completion_tokens=partial.completion_tokens,
        )
    else:
        rows.delete()
    return ai_uses_left(user)
