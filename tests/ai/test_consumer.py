"""The AI socket end to end: our consumer, the DevAgent, the in-memory container and a real
local OpenAI-compatible HTTP server."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest
from channels.db import database_sync_to_async

from internal_config.models import AIMemory, AIUsageLog, AuditLog, Config
from tests.ai.fake_provider import (
    DroppedReply,
    ErrorReply,
    MalformedReply,
    TextReply,
    ToolCallReply,
)
from tests.support.ai import INPUT_PRICE, MAIN_PY, OUTPUT_PRICE, receive_close_code, receive_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

ANSWER = ["The file", " prints a greeting."]


def tool_then_answer(path: str = "main.py") -> tuple[ToolCallReply, TextReply]:
    return (
        ToolCallReply("read_file", {"path": path}, prompt_tokens=40, completion_tokens=10),
        TextReply(ANSWER, prompt_tokens=60, completion_tokens=25),
    )


async def test_turn_with_a_tool_call_sends_events_in_contract_order(
    ai_config, user, running_container, open_ai_socket
):
    ai_config.queue(*tool_then_answer())
    socket = await open_ai_socket(user, running_container.pk)
    assert await receive_until(socket, "connected") == [
        {"event": "connected", "ai_uses_left_today": 5}
    ]

    await socket.send_json_to({"text": "What does main.py do?"})
    events = await receive_until(socket, "connected")

    assert events == [
        {"event": "start_text", "role": "assistant"},
        {"event": "text", "content": "Using read_file..."},
        {"event": "finish_text"},
        {"event": "start_text", "role": "assistant"},
        {"event": "text", "content": ANSWER[0]},
        {"event": "text", "content": ANSWER[1]},
        {"event": "finish_text"},
        {
            "event": "memory_data",
            "memory": [
                {"role": "user", "content": "What does main.py do?"},
                {"role": "assistant", "content": "".join(ANSWER)},
            ],
        },
        {"event": "connected", "ai_uses_left_today": 4},
    ]
    await socket.disconnect()


async def test_tool_result_from_the_container_is_sent_back_to_the_model(
    ai_config, user, running_container, ask_once
):
    ai_config.queue(*tool_then_answer())
    await ask_once(user, running_container.pk, "What does main.py do?")

    second = ai_config.requests[1].body["messages"]
    assert second[0]["role"] == "system"
    assert second[-2]["tool_calls"][0]["function"]["name"] == "read_file"
    assert second[-1] == {"role": "tool", "tool_call_id": "call_1", "content": MAIN_PY}


async def test_tool_call_is_audited_as_agent_tool(ai_config, user, running_container, ask_once):
    ai_config.queue(*tool_then_answer())
    await ask_once(user, running_container.pk, "What does main.py do?")

    row = await AuditLog.objects.aget(action="agent_tool.read_file")
    assert (row.user_id, row.target_type, row.target_id) == (
        user.pk,
        "container",
        str(running_container.pk),
    )
    assert row.success
    assert row.metadata == {"path": "main.py"}


async def test_answered_turn_writes_a_usage_row_with_tokens_model_and_price(
    ai_config, user, running_container, ask_once
):
    ai_config.queue(*tool_then_answer())
    await ask_once(user, running_container.pk, "What does main.py do?")

    row = await AIUsageLog.objects.aget(user=user)
    assert (row.container_id, row.query, row.response) == (
        running_container.pk,
        "What does main.py do?",
        "".join(ANSWER),
    )
    assert (row.model, row.prompt_tokens, row.completion_tokens) == ("fake-model", 100, 35)
    price = await database_sync_to_async(row.get_request_price)()
    assert price == Decimal(INPUT_PRICE) * 100 + Decimal(OUTPUT_PRICE) * 35
    assert all(r.body["stream_options"] == {"include_usage": True} for r in ai_config.requests)


async def test_memory_is_saved_and_replayed_on_the_next_connect(
    ai_config, user, running_container, open_ai_socket
):
    first = await open_ai_socket(user, running_container.pk)
    await receive_until(first, "connected")
    await first.send_json_to({"text": "Hi"})
    await receive_until(first, "connected")
    await first.disconnect()

    second = await open_ai_socket(user, running_container.pk)
    assert await receive_until(second, "connected") == [
        {"event": "start_text", "role": "user"},
        {"event": "text", "content": "Hi"},
        {"event": "finish_text"},
        {"event": "start_text", "role": "assistant"},
        {"event": "text", "content": "Hello from the fake model."},
        {"event": "finish_text"},
        {"event": "connected", "ai_uses_left_today": 4},
    ]
    await second.send_json_to({"text": "And again"})
    await receive_until(second, "connected")
    await second.disconnect()

    replayed = ai_config.requests[-1].body["messages"]
    assert [(m["role"], m["content"]) for m in replayed[1:]] == [
        ("user", "Hi"),
        ("assistant", "Hello from the fake model."),
        ("user", "And again"),
    ]


async def test_clear_resets_memory_without_spending_a_use(
    ai_config, user, running_container, open_ai_socket
):
    socket = await open_ai_socket(user, running_container.pk)
    await receive_until(socket, "connected")
    await socket.send_json_to({"text": "Hi"})
    await receive_until(socket, "connected")

    await socket.send_json_to({"text": "/clear"})
    events = await receive_until(socket, "connected")
    await socket.disconnect()

    assert events[-2:] == [
        {"event": "memory_data", "memory": []},
        {"event": "connected", "ai_uses_left_today": 4},
    ]
    assert [e["event"] for e in events[:3]] == ["start_text", "text", "finish_text"]
    memory = await AIMemory.objects.aget(user=user, container=running_container)
    assert memory.memory == []
    assert await AIUsageLog.objects.filter(user=user).acount() == 1
    assert len(ai_config.requests) == 1


async def test_connecting_without_uses_left_explains_then_closes_4401(
    ai_config, user, running_container, open_ai_socket, set_ai_uses
):
    await database_sync_to_async(set_ai_uses)(user, 0)
    socket = await open_ai_socket(user, running_container.pk)

    events = await receive_until(socket, "connected")
    assert [e["event"] for e in events] == ["start_text", "text", "finish_text", "connected"]
    assert "today" in events[1]["content"]
    assert events[-1] == {"event": "connected", "ai_uses_left_today": 0}
    assert await receive_close_code(socket) == 4401


async def test_turn_after_the_last_use_was_spent_elsewhere_is_refused_with_4401(
    ai_config, user, running_container, open_ai_socket, set_ai_uses
):
    await database_sync_to_async(set_ai_uses)(user, 1)
    first = await open_ai_socket(user, running_container.pk)
    second = await open_ai_socket(user, running_container.pk)
    await receive_until(first, "connected")
    await receive_until(second, "connected")
    await first.send_json_to({"text": "Hi"})
    assert (await receive_until(first, "connected"))[-1]["ai_uses_left_today"] == 0
    assert await second.receive_json_from() == {"event": "connected", "ai_uses_left_today": 0}

    await second.send_json_to({"text": "Me too"})
    events = await receive_until(second, "connected")
    assert [e["event"] for e in events] == ["start_text", "text", "finish_text", "connected"]
    assert events[-1] == {"event": "connected", "ai_uses_left_today": 0}
    assert await receive_close_code(second) == 4401
    assert len(ai_config.requests) == 1
    assert await AIUsageLog.objects.filter(user=user).acount() == 1
    await first.disconnect()


async def test_another_users_container_closes_4403(
    ai_config, other_user, running_container, open_ai_socket
):
    socket = await open_ai_socket(other_user, running_container.pk)
    assert await receive_close_code(socket) == 4403


async def test_unknown_container_closes_4404(ai_config, user, open_ai_socket):
    socket = await open_ai_socket(user, 999_999)
    assert await receive_close_code(socket) == 4404


async def test_connect_and_a_refused_connect_are_audited_like_the_ide_sockets(
    ai_config, user, other_user, running_container, open_ai_socket
):
    socket = await open_ai_socket(user, running_container.pk)
    await receive_until(socket, "connected")
    await socket.disconnect()
    refused = await open_ai_socket(other_user, running_container.pk)
    assert await receive_close_code(refused) == 4403

    rows = await database_sync_to_async(
        lambda: list(
            AuditLog.objects.filter(target_id=str(running_container.pk))
            .order_by("id")
            .values_list("action", "user__username", "success")
        )
    )()
    assert rows == [
        ("ws.connect", "alice", True),
        ("ws.disconnect", "alice", True),
        ("ws.connect", "bob", False),
    ]


async def test_ai_sockets_count_against_the_users_socket_cap(
    ai_config, user, running_container, open_ai_socket, settings
):
    settings.SOCKETS_MAX_PER_USER = 1
    first = await open_ai_socket(user, running_container.pk)
    await receive_until(first, "connected")

    second = await open_ai_socket(user, running_container.pk)
    refusal = await second.receive_json_from(timeout=10)
    assert refusal["event"] == "error" and "Too many open sockets" in refusal["message"]
    assert await receive_close_code(second) == 4429
    await first.disconnect()


async def test_anonymous_socket_closes_4401(ai_config, running_container, open_ai_socket):
    from django.contrib.auth.models import AnonymousUser

    socket = await open_ai_socket(AnonymousUser(), running_container.pk)
    assert await receive_close_code(socket) == 4401


async def test_provider_500_is_reported_readably_and_spends_no_use(
    ai_config, user, running_container, open_ai_socket
):
    ai_config.queue(ErrorReply(500))
    socket = await open_ai_socket(user, running_container.pk)
    await receive_until(socket, "connected")

    await socket.send_json_to({"text": "Hi"})
    events = await receive_until(socket, "connected")

    assert events == [
        {"event": "start_text", "role": "assistant"},
        {"event": "text", "content": "The AI provider failed (HTTP 500); try again later."},
        {"event": "finish_text"},
        {"event": "connected", "ai_uses_left_today": 5},
    ]
    assert await AIUsageLog.objects.filter(user=user).acount() == 0
    await socket.disconnect()


async def test_socket_stays_usable_after_a_provider_failure(
    ai_config, user, running_container, open_ai_socket
):
    ai_config.queue(ErrorReply(503), TextReply(["Back again."]))
    socket = await open_ai_socket(user, running_container.pk)
    await receive_until(socket, "connected")
    await socket.send_json_to({"text": "Hi"})
    await receive_until(socket, "connected")

    await socket.send_json_to({"text": "Hi again"})
    events = await receive_until(socket, "connected")
    await socket.disconnect()

    assert {"event": "text", "content": "Back again."} in events
    assert events[-1] == {"event": "connected", "ai_uses_left_today": 4}


@pytest.mark.parametrize(
    ("reply", "expected", "uses_left"),
    [
        (ErrorReply(429), "rate limiting", 5),
        (ErrorReply(502), "HTTP 502", 5),
        (MalformedReply(), "could not read", 5),
        # The answer had started: the use is spent, as it is when the client leaves then.
        (DroppedReply(chunks_before=["Half"]), "broke off", 4),
    ],
    ids=["rate-limited", "bad-gateway", "malformed-stream", "dropped-connection"],
)
async def test_provider_failures_end_the_turn_with_a_readable_message(
    ai_config, user, running_container, ask_once, reply, expected, uses_left
):
    ai_config.queue(reply)
    events = await ask_once(user, running_container.pk, "Hi")

    texts = "".join(e.get("content", "") for e in events if e["event"] == "text")
    assert expected in texts
    assert events[-2:] == [
        {"event": "finish_text"},
        {"event": "connected", "ai_uses_left_today": uses_left},
    ]


async def test_a_rejected_api_key_never_reaches_the_user_or_the_logs(
    ai_config, user, running_container, open_ai_socket, caplog
):
    secret = "sk-wrong-key-that-must-stay-hidden"
    await Config.objects.filter(name="openai_api_key").aupdate(value=secret)
    caplog.set_level(logging.DEBUG)
    socket = await open_ai_socket(user, running_container.pk)
    await receive_until(socket, "connected")

    await socket.send_json_to({"text": "Hi"})
    events = await receive_until(socket, "connected")
    await socket.disconnect()

    assert "HTTP 401" in events[1]["content"]
    assert secret not in repr(events)
    assert secret not in caplog.text
    assert ai_config.requests[0].headers["authorization"] == f"Bearer {secret}"


async def test_prompt_over_3000_characters_is_refused_with_an_explanation(
    ai_config, user, running_container, open_ai_socket
):
    socket = await open_ai_socket(user, running_container.pk)
    await receive_until(socket, "connected")

    await socket.send_json_to({"text": "x" * 3001})
    events = [await socket.receive_json_from() for _ in range(3)]
    await socket.send_json_to({"text": "x" * 3000})
    after = await receive_until(socket, "connected")
    await socket.disconnect()

    assert [e["event"] for e in events] == ["start_text", "text", "finish_text"]
    assert "3000" in events[1]["content"]
    assert len(ai_config.requests) == 1
    assert after[-1] == {"event": "connected", "ai_uses_left_today": 4}


@pytest.mark.parametrize("frame", ["not json", '["a list"]', '{"text": 5}', '{"other": "x"}'])
async def test_a_frame_that_is_not_a_text_message_gets_an_error_and_the_socket_stays_open(
    ai_config, user, running_container, open_ai_socket, frame
):
    socket = await open_ai_socket(user, running_container.pk)
    await receive_until(socket, "connected")

    await socket.send_to(text_data=frame)
    error = await socket.receive_json_from()
    await socket.send_json_to({"text": "Hi"})
    events = await receive_until(socket, "connected")
    await socket.disconnect()

    assert error["event"] == "error"
    assert error["message"]
    assert events[-1] == {"event": "connected", "ai_uses_left_today": 4}


async def test_a_second_message_during_a_turn_is_refused_not_queued(
    ai_config, user, running_container, open_ai_socket
):
    ai_config.queue(TextReply(["Slow", " answer."], first_token_delay=0.5))
    socket = await open_ai_socket(user, running_container.pk)
    await receive_until(socket, "connected")

    await socket.send_json_to({"text": "First"})
    await socket.send_json_to({"text": "Second"})
    events = await receive_until(socket, "connected")
    await socket.disconnect()

    assert events[0] == {
        "event": "error",
        "message": "The assistant is still answering; wait for it to finish.",
    }
    assert len(ai_config.requests) == 1


async def test_disconnecting_mid_turn_gives_the_reserved_use_back(
    ai_config, user, running_container, open_ai_socket
):
    ai_config.queue(TextReply(["Too", " late."], first_token_delay=1.0))
    socket = await open_ai_socket(user, running_container.pk)
    await receive_until(socket, "connected")
    await socket.send_json_to({"text": "Hi"})
    for _ in range(50):
        if ai_config.requests:
            break
        await socket.receive_nothing(timeout=0.05)
    assert await AIUsageLog.objects.filter(user=user).acount() == 1

    await socket.disconnect()

    assert await AIUsageLog.objects.filter(user=user).acount() == 0


async def test_an_admin_edit_of_the_model_applies_to_the_next_turn(
    ai_config, user, running_container, open_ai_socket
):
    socket = await open_ai_socket(user, running_container.pk)
    await receive_until(socket, "connected")
    await socket.send_json_to({"text": "Hi"})
    await receive_until(socket, "connected")

    await Config.objects.filter(name="openai_model").aupdate(value="other-model")
    await socket.send_json_to({"text": "Hi again"})
    await receive_until(socket, "connected")
    await socket.disconnect()

    assert [r.body["model"] for r in ai_config.requests] == ["fake-model", "other-model"]


async def test_a_turn_on_a_container_without_a_vm_still_answers(
    ai_config, user, make_container, ask_once, set_ai_uses
):
    await database_sync_to_async(set_ai_uses)(user, 5)
    container = await database_sync_to_async(make_container)(user)
    ai_config.queue(*tool_then_answer())
    events = await ask_once(user, container.pk, "What does main.py do?")

    tool_result = ai_config.requests[1].body["messages"][-1]["content"]
    assert "no running VM" in tool_result
    assert events[-1] == {"event": "connected", "ai_uses_left_today": 4}


async def test_a_spent_use_is_announced_to_the_users_other_sockets(
    ai_config, user, running_container, make_container, open_ai_socket
):
    other_container = await database_sync_to_async(make_container)(user)
    talking = await open_ai_socket(user, running_container.pk)
    watching = await open_ai_socket(user, other_container.pk)
    await receive_until(talking, "connected")
    await receive_until(watching, "connected")

    await talking.send_json_to({"text": "Hi"})
    await receive_until(talking, "connected")

    assert await watching.receive_json_from() == {"event": "connected", "ai_uses_left_today": 4}
    assert await talking.receive_nothing(timeout=0.2)
    await talking.disconnect()
    await watching.disconnect()


async def test_a_stream_that_breaks_mid_answer_ends_the_open_text_with_the_error(
    ai_config, user, running_container, ask_once
):
    ai_config.queue(MalformedReply(chunks_before=["Half an"]))
    events = await ask_once(user, running_container.pk, "Hi")

    assert [e["event"] for e in events] == [
        "start_text",
        "text",
        "text",
        "finish_text",
        "connected",
    ]
    assert events[1]["content"] == "Half an"
    assert "could not read" in events[2]["content"]
    assert events[-1]["ai_uses_left_today"] == 4  # streamed output spends the use
    row = await AIUsageLog.objects.aget(user=user)
    assert row.response == "Half an"


async def test_a_provider_that_stalls_past_the_read_timeout_spends_no_use(
    ai_config, user, running_container, ask_once, monkeypatch
):
    monkeypatch.setattr("ai_services.utils.READ_TIMEOUT", 0.3)
    ai_config.queue(TextReply(["Too", " slow."], first_token_delay=1.5))
    events = await ask_once(user, running_container.pk, "Hi")

    assert events[1] == {"event": "text", "content": "The AI provider did not answer in time."}
    assert events[-1] == {"event": "connected", "ai_uses_left_today": 5}


async def test_the_tool_loop_stops_after_max_rounds_and_asks_for_text_last(
    ai_config, user, running_container, ask_once
):
    from ai_services.agents.dev_agent import MAX_ROUNDS

    ai_config.queue(*[ToolCallReply("read_workspace", {}) for _ in range(MAX_ROUNDS)])
    events = await ask_once(user, running_container.pk, "Loop forever")

    assert len(ai_config.requests) == MAX_ROUNDS
    assert [r.body["tool_choice"] for r in ai_config.requests][-2:] == ["auto", "none"]
    announced = [e for e in events if e.get("content") == "Using read_workspace..."]
    assert len(announced) == MAX_ROUNDS - 1
    assert events[-1] == {"event": "connected", "ai_uses_left_today": 4}


async def test_an_unreachable_provider_is_reported_and_spends_no_use(
    ai_config, user, running_container, ask_once
):
    await Config.objects.filter(name="openai_api_url").aupdate(value="http://127.0.0.1:1/v1")
    events = await ask_once(user, running_container.pk, "Hi")

    assert events[1] == {"event": "text", "content": "The AI provider could not be reached."}
    assert events[-1] == {"event": "connected", "ai_uses_left_today": 5}


async def test_text_streamed_before_a_tool_call_is_closed_before_the_announcement(
    ai_config, user, running_container, ask_once
):
    ai_config.queue(
        ToolCallReply("read_file", {"path": "main.py"}, content_before="Let me look."),
        TextReply(["It greets."]),
    )
    events = await ask_once(user, running_container.pk, "What does main.py do?")

    assert events[:9] == [
        {"event": "start_text", "role": "assistant"},
        {"event": "text", "content": "Let me look."},
        {"event": "finish_text"},
        {"event": "start_text", "role": "assistant"},
        {"event": "text", "content": "Using read_file..."},
        {"event": "finish_text"},
        {"event": "start_text", "role": "assistant"},
        {"event": "text", "content": "It greets."},
        {"event": "finish_text"},
    ]
    assert events[9]["memory"][-1] == {"role": "assistant", "content": "Let me look.\n\nIt greets."}


async def test_a_container_deleted_while_the_socket_is_open_closes_it_with_4404(
    ai_config, user, running_container, open_ai_socket
):
    from django.utils import timezone

    from vm_manager.models import Container

    socket = await open_ai_socket(user, running_container.pk)
    await receive_until(socket, "connected")
    await Container.objects.filter(pk=running_container.pk).aupdate(deleted_at=timezone.now())

    await socket.send_json_to({"text": "Hi"})
    events = [await socket.receive_json_from() for _ in range(3)]

    assert events[1] == {"event": "text", "content": "No such container."}
    assert await receive_close_code(socket) == 4404
    assert ai_config.requests == []
    assert await AIUsageLog.objects.acount() == 0
