"""The raw terminal protocol ``/ws/containers/{pk}/?sid=<sid>`` (the original project's newer
frontend) against the in-memory node: one session per socket, keystrokes as typed, in-band
resize, raw output."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from channels.testing import WebsocketCommunicator

from tests.support.sockets import close_code, communicator
from vm_manager.models import Container

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

KEYSTROKES = ["e", "c", "h", "o", " ", "4", "2", "\r"]


def raw_path(container: Container, sid: str = "t1") -> str:
    return f"/ws/containers/{container.pk}/?sid={sid}"


async def raw_until(comm: WebsocketCommunicator, needle: str, timeout: float = 10.0) -> str:
    """Raw output until ``needle`` shows up; every frame must be plain text, never JSON."""
    deadline = time.monotonic() + timeout
    seen = ""
    while needle not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"{needle!r} not seen in {seen!r}"
        message = await comm.receive_output(timeout=left)
        assert message["type"] == "websocket.send", message
        text = message.get("text")
        assert isinstance(text, str), message
        assert_not_json(text)
        seen += text
    return seen


def assert_not_json(text: str) -> None:
    try:
        parsed = json.loads(text)
    except ValueError:
        return
    assert not isinstance(parsed, dict), f"a JSON event on a raw socket: {text!r}"


def output_lines(raw: str) -> list[str]:
    return [line.strip() for line in raw.replace("\r", "\n").split("\n")]


async def check_echo_42_typed_key_by_key(
    comm: WebsocketCommunicator, timeout: float = 10.0
) -> None:
    """Shared with the real-guest test: ``echo 42`` typed one frame per key prints 42 once."""
    for key in KEYSTROKES:
        await comm.send_to(text_data=key)
    await comm.send_to(text_data="echo do''ne\r")
    output = await raw_until(comm, "done", timeout)
    assert output_lines(output).count("42") == 1
    assert "command not found" not in output


async def check_resize_changes_stty_size(
    comm: WebsocketCommunicator, timeout: float = 10.0
) -> None:
    await comm.send_to(text_data="__RESIZE__ 100x30")
    await comm.send_to(text_data="stty size; echo siz''ed\r")
    output = await raw_until(comm, "sized", timeout)
    assert "30 100" in output_lines(output)
    assert "__RESIZE__" not in output


async def test_keystrokes_sent_one_frame_each_print_42_once(
    running_container, alice_cookie, open_socket
):
    comm = await open_socket(raw_path(running_container), alice_cookie)
    await check_echo_42_typed_key_by_key(comm)


async def test_a_resize_line_changes_stty_size_and_is_not_typed(
    running_container, alice_cookie, open_socket
):
    comm = await open_socket(raw_path(running_container), alice_cookie)
    await check_resize_changes_stty_size(comm)


async def test_binary_frames_are_keystrokes_too(running_container, alice_cookie, open_socket):
    comm = await open_socket(raw_path(running_container), alice_cookie)
    await comm.send_to(bytes_data=b"echo $((6*7))")
    await comm.send_to(bytes_data=b"\r")
    await comm.send_to(bytes_data=b"echo do''ne\r")
    assert "42" in output_lines(await raw_until(comm, "done"))


async def test_ctrl_c_as_a_raw_byte_interrupts(running_container, alice_cookie, open_socket):
    comm = await open_socket(raw_path(running_container), alice_cookie)
    await comm.send_to(text_data="sleep 30; echo sl''ept\r")
    await raw_until(comm, "sleep 30")  # the shell took the line (a SIGINT before can end it)
    await asyncio.sleep(0.3)
    await comm.send_to(text_data="\x03")
    await comm.send_to(text_data="echo after-$((4*4))\r")
    output = await raw_until(comm, "after-16")
    assert "slept" not in output


async def test_an_invalid_sid_is_explained_in_text_and_closes_4400(running_container, alice_cookie):
    comm = communicator(raw_path(running_container, "bad%20sid!"), alice_cookie)
    await comm.connect(timeout=10)
    explained = await comm.receive_output(timeout=10)
    assert "'sid' must be" in explained["text"]
    assert_not_json(explained["text"])
    closed = await comm.receive_output(timeout=10)
    assert closed == {"type": "websocket.close", "code": 4400}


async def test_another_users_container_is_closed_4403_in_raw_mode(running_container, bob_cookie):
    assert await close_code(raw_path(running_container), bob_cookie) == 4403


async def test_the_json_mode_is_unchanged_without_sid(running_container, alice_cookie, open_socket):
    comm = await open_socket(f"/ws/containers/{running_container.pk}/", alice_cookie)
    hello = await comm.receive_json_from(timeout=10)
    assert hello["type"] == "info" and hello["sessions"] == ["s1"]
