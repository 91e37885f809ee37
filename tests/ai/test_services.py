"""AI services: the daily-use reservation and the bounded memory, on the real database."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connection

from ai_services.agents import AgentAnswer, ChatMessage
from ai_services.errors import AINoUsesLeft
from ai_services.services import (
    MAX_MEMORY_CHARS,
    MAX_MEMORY_MESSAGES,
    ai_turn_abort,
    ai_turn_begin,
    ai_turn_complete,
    ai_uses_left,
    memory_bounded,
)
from internal_config.models import AIMemory, AIUsageLog


def turns(count: int, size: int = 10) -> list[ChatMessage]:
    messages: list[ChatMessage] = []
    for number in range(count):
        messages.append(ChatMessage(role="user", content=f"q{number}".ljust(size, ".")))
        messages.append(ChatMessage(role="assistant", content=f"a{number}".ljust(size, ".")))
    return messages


def test_memory_drops_the_oldest_turns_beyond_the_message_limit():
    kept = memory_bounded(turns(MAX_MEMORY_MESSAGES // 2 + 3))
    assert len(kept) == MAX_MEMORY_MESSAGES
    assert kept[0]["content"].startswith("q3")
    assert kept[-1]["content"].startswith(f"a{MAX_MEMORY_MESSAGES // 2 + 2}")


def test_memory_drops_whole_turns_beyond_the_character_budget():
    kept = memory_bounded(turns(4, size=MAX_MEMORY_CHARS // 3))
    assert [m["role"] for m in kept] == ["user", "assistant"]
    assert kept[0]["content"].startswith("q3")


@pytest.mark.django_db
def test_a_turn_reserves_a_use_that_an_abort_gives_back(user, make_container):
    container = make_container(user)
    start = ai_turn_begin(user, container.pk, "hi")
    assert ai_uses_left(user) == 4

    assert ai_turn_abort(user, start.usage_log_id) == 5
    assert not AIUsageLog.objects.exists()


@pytest.mark.django_db
def test_no_use_is_reserved_once_the_day_is_spent(user, make_container):
    container = make_container(user)
    user.quota.ai_use_per_day = 1
    user.quota.save(update_fields=["ai_use_per_day"])
    ai_turn_begin(user, container.pk, "first")

    with pytest.raises(AINoUsesLeft):
        ai_turn_begin(user, container.pk, "second")
    assert AIUsageLog.objects.count() == 1


@pytest.mark.django_db
def test_stored_memory_stays_bounded_over_many_turns(user, make_container):
    container = make_container(user)
    user.quota.ai_use_per_day = 100
    user.quota.save(update_fields=["ai_use_per_day"])
    for number in range(MAX_MEMORY_MESSAGES):
        start = ai_turn_begin(user, container.pk, f"q{number}")
        answer = AgentAnswer(text=f"a{number}", model="m")
        ai_turn_complete(user, container.pk, start.usage_log_id, f"q{number}", answer)

    memory = AIMemory.objects.get(user=user, container=container).memory
    assert len(memory) == MAX_MEMORY_MESSAGES
    assert memory[-1] == {"role": "assistant", "content": f"a{MAX_MEMORY_MESSAGES - 1}"}


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_two_workers_racing_for_the_last_use_spend_it_once(user, make_container):
    """Two threads, two PostgreSQL connections: the quota row lock lets one through."""
    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL")
    container = make_container(user)
    user.quota.ai_use_per_day = 1
    user.quota.save(update_fields=["ai_use_per_day"])
    barrier = threading.Barrier(4)
    outcomes: list[Any] = []

    def spend() -> None:
        barrier.wait()
        try:
            outcomes.append(ai_turn_begin(user, container.pk, "race").usage_log_id)
        except AINoUsesLeft as exc:
            outcomes.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=spend) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sum(isinstance(o, int) for o in outcomes) == 1
    assert sum(isinstance(o, AINoUsesLeft) for o in outcomes) == 3
    assert AIUsageLog.objects.filter(user=user).count() == 1
