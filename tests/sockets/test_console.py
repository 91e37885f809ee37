"""The console socket ``/ws/containers/{pk}/`` against the in-memory node (real PTYs)."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
from channels.db import database_sync_to_async

from internal_config.models import AuditLog
from tests.support.sockets import close_code, communicator, event_where, next_event, stream_until
from vm_manager.drivers.memory import InMemoryNodeDriver, _PtyTerminal
from vm_manager.ide.console import ConsoleConsumer
from vm_manager.ide.terminals import ConsoleSessions
from vm_manager.models import Container

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(60),
]


def path_of(container: Container) -> str:
    return f"/ws/containers/{container.pk}/"


async def connected_console(open_socket, container, cookie):
    comm = await open_socket(path_of(container), cookie)
    hello = await next_event(comm)
    assert hello == {"type": "info", "message": "Connected", "sessions": ["s1"], "active": "s1"}
    # Wait for the prompt: readline discards what is typed before it starts.
    await stream_until(comm, "bash-", sid="s1")
    return comm


def audit_actions(container: Container) -> list[str]:
    return list(
        AuditLog.objects.filter(target_type="container", target_id=str(container.pk))
        .order_by("id")
        .values_list("action", flat=True)
    )


def audited_commands(container: Container) -> list[str]:
    """Actions of command rows, batched ones (``metadata.commands``) unpacked."""
    actions: list[str] = []
    rows = AuditLog.objects.filter(target_type="container", target_id=str(container.pk))
    for action, metadata in rows.order_by("id").values_list("action", "metadata"):
        batch = metadata.get("commands") if isinstance(metadata, dict) else None
        actions.extend(item["action"] for item in batch) if batch else actions.append(action)
    return actions


async def eventually_audited(container: Container, action: str, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while action not in await database_sync_to_async(audited_commands)(container):
        assert time.monotonic() < deadline, f"{action} not audited"
        await asyncio.sleep(0.1)


@pytest.fixture
def terminals(monkeypatch: pytest.MonkeyPatch) -> list[_PtyTerminal]:
    """Every PTY the in-memory node opens during the test, in order."""
    opened: list[_PtyTerminal] = []
    original = InMemoryNodeDriver.open_terminal

    async def recording(self, vm_id, cols=80, rows=24):
        terminal = await original(self, vm_id, cols, rows)
        opened.append(terminal)
        return terminal

    monkeypatch.setattr(InMemoryNodeDriver, "open_terminal", recording)
    return opened


async def test_connect_opens_session_s1_and_says_connected(
    running_container, alice_cookie, open_socket
):
    await connected_console(open_socket, running_container, alice_cookie)


async def test_plain_text_runs_in_the_active_session(running_container, alice_cookie, open_socket):
    comm = await connected_console(open_socket, running_container, alice_cookie)
    await comm.send_to(text_data="echo $((6*7))")
    await stream_until(comm, "42", sid="s1")


async def test_text_that_parses_as_json_but_not_an_object_is_a_command(
    running_container, alice_cookie, open_socket
):
    comm = await connected_console(open_socket, running_container, alice_cookie)
    await comm.send_to(text_data="4242")  # "4242: command not found" proves it ran
    await stream_until(comm, "4242", sid="s1")


async def test_data_goes_to_the_named_session(running_container, alice_cookie, open_socket):
    comm = await connected_console(open_socket, running_container, alice_cookie)
    await comm.send_json_to({"control": "open", "sid": "s2"})
    await event_where(comm, lambda e: e.get("message") == "session-opened")
    await comm.send_json_to({"data": "echo marker-$((1+1))", "sid": "s1"})
    await stream_until(comm, "marker-2", sid="s1")


async def test_open_creates_and_focuses_a_session(running_container, alice_cookie, open_socket):
    comm = await connected_console(open_socket, running_container, alice_cookie)
    await comm.send_json_to({"control": "open", "sid": "s2"})
    opened = await event_where(comm, lambda e: e.get("type") == "info")
    assert opened == {"type": "info", "message": "session-opened", "sid": "s2", "active": "s2"}
    await comm.send_to(text_data="echo in-$((2*3))")
    await stream_until(comm, "in-6", sid="s2")


async def test_opening_an_existing_session_is_an_error(
    running_container, alice_cookie, open_socket
):
    comm = await connected_console(open_socket, running_container, alice_cookie)
    await comm.send_json_to({"control": "open", "sid": "s1"})
    error = await event_where(comm, lambda e: e.get("type") == "error")
    assert "already exists" in error["message"]


async def test_close_removes_the_session(running_container, alice_cookie, open_socket):
    comm = await connected_console(open_socket, running_container, alice_cookie)
    await comm.send_json_to({"control": "open", "sid": "s2"})
    await event_where(comm, lambda e: e.get("message") == "session-opened")
    await comm.send_json_to({"control": "close", "sid": "s2"})
    closed = await event_where(comm, lambda e: e.get("type") == "info")
    assert closed == {"type": "info", "message": "session-closed", "sid": "s2", "active": "s1"}
    await comm.send_json_to({"data": "echo x", "sid": "s2"})
    error = await event_where(comm, lambda e: e.get("type") == "error")
    assert error["message"] == "Unknown session 's2'."


async def test_focus_moves_plain_text_to_another_session(
    running_container, alice_cookie, open_socket
):
    comm = await connected_console(open_socket, running_container, alice_cookie)
    await comm.send_json_to({"control": "open", "sid": "s2"})
    await event_where(comm, lambda e: e.get("message") == "session-opened")
    await comm.send_json_to({"control": "focus", "sid": "s1"})
    focused = await event_where(comm, lambda e: e.get("type") == "info")
    assert focused == {"type": "info", "message": "session-focused", "sid": "s1", "active": "s1"}
    await comm.send_to(text_data="echo back-$((3*3))")
    await stream_until(comm, "back-9", sid="s1")


async def test_resize_changes_the_terminal_size(running_container, alice_cookie, open_socket):
    comm = await connected_console(open_socket, running_container, alice_cookie)
    await comm.send_json_to({"control": "resize", "sid": "s1", "cols": 123, "rows": 45})
    await comm.send_to(text_data="stty size")
    await stream_until(comm, "45 123", sid="s1")


async def test_resize_out_of_range_is_an_error(running_container, alice_cookie, open_socket):
    comm = await connected_console(open_socket, running_container, alice_cookie)
    await comm.send_json_to({"control": "resize", "sid": "s1", "cols": 0, "rows": 45})
    error = await event_where(comm, lambda e: e.get("type") == "error")
    assert "'cols'" in error["message"]


async def test_broadcast_reaches_every_session(running_container, alice_cookie, open_socket):
    comm = await connected_console(open_socket, running_container, alice_cookie)
    await comm.send_json_to({"control": "open", "sid": "s2"})
    await event_where(comm, lambda e: e.get("message") == "session-opened")
    await comm.send_json_to({"data": "echo all-$((5*5))", "broadcast": True})
    seen: dict[str, str] = {"s1": "", "s2": ""}
    while not all("all-25" in text for text in seen.values()):
        event = await event_where(comm, lambda e: e.get("type") == "stream")
        seen[event["sid"]] += event["payload"]


async def test_ctrlc_interrupts_the_running_command(running_container, alice_cookie, open_socket):
    comm = await connected_console(open_socket, running_container, alice_cookie)
    await comm.send_to(text_data="sleep 30; echo sl''ept")
    await asyncio.sleep(0.3)
    await comm.send_json_to({"data": "ctrlc"})
    await comm.send_to(text_data="echo after-$((4*4))")
    output = await stream_until(comm, "after-16", sid="s1", timeout=5)
    assert "slept" not in output
    await eventually_audited(running_container, "ws.ctrlc")


async def test_ctrld_ends_the_shell_and_reports_the_session_closed(
    running_container, alice_cookie, open_socket
):
    comm = await connected_console(open_socket, running_container, alice_cookie)
    await comm.send_to(text_data="ctrld")
    info = await event_where(comm, lambda e: e.get("type") == "info")
    assert info["message"] == "session-closed" and info["sid"] == "s1"
    assert info["active"] is None
    await eventually_audited(running_container, "ws.ctrld")


async def test_lost_upstream_is_reported_and_the_session_removed(
    running_container, alice_cookie, open_socket, terminals
):
    comm = await connected_console(open_socket, running_container, alice_cookie)
    os.kill(terminals[0]._pid, signal.SIGKILL)
    info = await event_where(comm, lambda e: e.get("type") == "info")
    assert info["message"] == "session-closed" and info["sid"] == "s1"
    assert info["reason"] == "the session ended"
    await comm.send_to(text_data="echo anyone")
    error = await event_where(comm, lambda e: e.get("type") == "error")
    assert error["message"] == "No active session."
    await comm.send_json_to({"control": "open", "sid": "s3"})
    await event_where(comm, lambda e: e.get("message") == "session-opened")


async def test_disconnect_closes_every_session_and_leaves_no_tasks(
    running_container, alice_cookie, terminals
):
    comm = communicator(path_of(running_container), alice_cookie)
    await comm.connect()
    await next_event(comm)
    await comm.send_json_to({"control": "open", "sid": "s2"})
    await event_where(comm, lambda e: e.get("message") == "session-opened")
    await comm.send_to(text_data="sleep 60")

    await comm.disconnect()

    assert len(terminals) == 2 and all(t._closed for t in terminals)
    for terminal in terminals:
        with pytest.raises(ChildProcessError):
            os.waitpid(terminal._pid, os.WNOHANG)  # already reaped: the shell is gone
    readers = [t for t in asyncio.all_tasks() if t.get_name().startswith("console-")]
    assert readers == []


async def test_unknown_control_is_an_error_and_the_socket_stays_open(
    running_container, alice_cookie, open_socket
):
    comm = await connected_console(open_socket, running_container, alice_cookie)
    await comm.send_json_to({"control": "explode", "sid": "s1"})
    error = await event_where(comm, lambda e: e.get("type") == "error")
    assert error == {"type": "error", "message": "Unknown control 'explode'."}
    await comm.send_to(text_data="echo still-$((8*8))")
    await stream_until(comm, "still-64")


async def test_a_json_object_without_data_or_control_is_an_error(
    running_container, alice_cookie, open_socket
):
    comm = await connected_console(open_socket, running_container, alice_cookie)
    await comm.send_json_to({"sid": "s1"})
    error = await event_where(comm, lambda e: e.get("type") == "error")
    assert "'data'" in error["message"]


async def test_binary_frames_are_raw_keystrokes(running_container, alice_cookie, open_socket):
    comm = await connected_console(open_socket, running_container, alice_cookie)
    await comm.send_to(bytes_data=b"echo raw-$((9*9))\r")
    await stream_until(comm, "raw-81")


async def test_an_oversized_frame_is_refused_with_an_error(
    running_container, alice_cookie, open_socket
):
    comm = await connected_console(open_socket, running_container, alice_cookie)
    await comm.send_to(text_data="x" * (64 * 1024 + 1))
    error = await event_where(comm, lambda e: e.get("type") == "error")
    assert "larger than" in error["message"]


async def test_input_beyond_the_rate_limit_is_refused(
    running_container, alice_cookie, open_socket, monkeypatch
):
    monkeypatch.setattr(ConsoleConsumer, "rate_per_second", 1.0)
    monkeypatch.setattr(ConsoleConsumer, "rate_burst", 3)
    comm = await connected_console(open_socket, running_container, alice_cookie)
    for _ in range(5):
        await comm.send_to(text_data=":")
    error = await event_where(comm, lambda e: e.get("type") == "error")
    assert error["message"] == "too many messages, slow down"


async def test_an_unexpected_failure_becomes_an_error_event(
    running_container, alice_cookie, open_socket, monkeypatch
):
    async def broken(self, sid, data):
        raise RuntimeError("boom")

    monkeypatch.setattr(ConsoleSessions, "write", broken)
    comm = await connected_console(open_socket, running_container, alice_cookie)
    await comm.send_to(text_data="echo hi")
    error = await event_where(comm, lambda e: e.get("type") == "error")
    assert error == {"type": "error", "message": "internal error"}
    await comm.send_json_to({"control": "focus", "sid": "s1"})
    await event_where(comm, lambda e: e.get("message") == "session-focused")


async def test_a_stopped_vm_gives_an_error_and_no_sessions(
    running_container, alice_cookie, open_socket
):
    node = running_container.node
    await InMemoryNodeDriver(node.name).vm_stop(running_container.vm_id)
    comm = await open_socket(path_of(running_container), alice_cookie)
    assert await next_event(comm) == {"type": "error", "message": "The container is not running."}
    hello = await next_event(comm)
    assert hello == {"type": "info", "message": "Connected", "sessions": [], "active": None}


async def test_connect_command_and_disconnect_are_audited(running_container, alice_cookie):
    comm = communicator(path_of(running_container), alice_cookie)
    await comm.connect()
    await next_event(comm)
    await comm.send_json_to({"data": "echo audited"})
    await stream_until(comm, "audited\r\n")
    await comm.disconnect()

    actions = await database_sync_to_async(audit_actions)(running_container)
    assert actions == ["ws.connect", "ws.cmd", "ws.disconnect"]
    row = await database_sync_to_async(
        lambda: AuditLog.objects.get(action="ws.cmd", target_id=str(running_container.pk))
    )()
    assert row.message == "echo audited" and row.user_id == running_container.user_id
    assert row.metadata == {"sids": ["s1"], "broadcast": False}


async def test_anonymous_is_closed_with_4401(running_container):
    assert await close_code(path_of(running_container), None) == 4401


async def test_another_users_container_is_closed_with_4403(running_container, bob_cookie):
    assert await close_code(path_of(running_container), bob_cookie) == 4403
    actions = await database_sync_to_async(audit_actions)(running_container)
    assert actions == ["ws.connect"]


async def test_a_missing_container_is_closed_with_4404(alice_cookie):
    assert await close_code("/ws/containers/999999/", alice_cookie) == 4404


async def test_a_foreign_origin_is_refused(running_container, alice_cookie):
    comm = communicator(path_of(running_container), alice_cookie, origin=b"https://evil.test")
    connected, _ = await comm.connect()
    assert not connected


async def test_output_is_utf8_text(running_container, alice_cookie, open_socket):
    comm = await connected_console(open_socket, running_container, alice_cookie)
    await comm.send_to(text_data="printf 'h\\xc3\\xa9llo\\n'")
    await stream_until(comm, "héllo")
