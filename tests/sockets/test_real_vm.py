"""Both IDE sockets through a real node agent and a real QEMU guest (marker ``vm``).

One VM, booted by the reconciler: the console runs ``echo $((6*7))`` in the guest and reads
``42``; the first editor connect applies the ``default`` template; a file written from the
editor is read back through the console with ``cat``; the raw terminal protocol
(``?sid=``) types ``echo 42`` one key per frame and resizes the PTY in-band.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.agents import TOKEN, AgentProcess
from tests.support.fixtures.agents import guest_image_dir, start_agent, token
from tests.support.sockets import event_where, next_event, stream_until
from vm_manager.models import Container, ContainerType
from vm_manager.reconciler import reconcile_once
from vm_manager.services import node_register

from .test_editor import template_applied
from .test_raw_terminal import check_echo_42_typed_key_by_key, check_resize_changes_stty_size

__all__ = ["guest_image_dir", "start_agent", "token"]  # fixtures, imported for this module

pytestmark = [pytest.mark.vm, pytest.mark.django_db(transaction=True), pytest.mark.timeout(900)]

BOOT_TIMEOUT = 400.0
GUEST_TIMEOUT = 60.0


@pytest.fixture
def agent(start_agent: Callable[..., AgentProcess], guest_image_dir: Path) -> AgentProcess:
    return start_agent(guest_image_dir, accel="auto")


@pytest.fixture
def guest_container(user, agent: AgentProcess, settings, seeded) -> Iterator[Container]:
    settings.NODE_DRIVER = "vm_manager.drivers.http.HttpNodeDriver"
    node = node_register("real", url=agent.url, token=TOKEN)
    tiny = ContainerType.objects.create(
        container_type_name="vm-socket-test", memory_mb=512, vcpus=1, disk_gib=4
    )
    container = Container.objects.create(user=user, container_type=tiny, node=node)
    deadline = time.monotonic() + BOOT_TIMEOUT
    while container.status != Container.Status.RUNNING:
        if time.monotonic() > deadline:
            raise AssertionError(f"guest not running: {container.status_reason!r}")
        reconcile_once()
        container.refresh_from_db()
        time.sleep(1)
    yield container
    container.desired_state = Container.DesiredState.STOPPED
    container.save(update_fields=["desired_state"])
    reconcile_once()


async def test_console_and_editor_work_on_a_real_guest(guest_container, alice_cookie, open_socket):
    console = await open_socket(f"/ws/containers/{guest_container.pk}/", alice_cookie)
    hello = await next_event(console, timeout=GUEST_TIMEOUT)
    assert hello == {"type": "info", "message": "Connected", "sessions": ["s1"], "active": "s1"}
    await console.send_to(text_data="echo $((6*7))")
    await stream_until(console, "42\r\n", sid="s1", timeout=GUEST_TIMEOUT)

    editor = await open_socket(f"/ws/fs/{guest_container.pk}/", alice_cookie)
    assert await next_event(editor, timeout=GUEST_TIMEOUT) == {"event": "connected"}
    await editor.send_json_to(
        {
            "action": "write_file",
            "req_id": 1,
            "path": "/app/from-editor.txt",
            "content": "written by the editor 7x6\n",
            "prev_rev": 0,
        }
    )
    reply = await event_where(editor, lambda e: e.get("req_id") == 1, timeout=GUEST_TIMEOUT)
    assert reply["event"] == "ok" and reply["rev"] == 1, reply

    await template_applied(guest_container, timeout=GUEST_TIMEOUT)  # written beside replies
    await console.send_to(text_data="cat /app/from-editor.txt; ls /app")
    output = await stream_until(console, "README.md", sid="s1", timeout=GUEST_TIMEOUT)
    assert "written by the editor 7x6\r\n" in output

    async def ask(req_id: int, action: str, **fields: object) -> dict:
        await editor.send_json_to({"action": action, "req_id": req_id, **fields})
        return await event_where(editor, lambda e: e.get("req_id") == req_id, GUEST_TIMEOUT)

    found = await ask(2, "search", root="/app", pattern="7X6")
    assert found["data"] == [
        {"path": "/app/from-editor.txt", "matchs": ["L1: written by the editor 7x6"]}
    ]
    stale = await ask(3, "write_file", path="/app/from-editor.txt", content="x", prev_rev=0)
    assert stale["error"] == "conflict" and stale["rev"] == 1

    await console.send_to(text_data="ln -s /etc /app/etc-link && echo linked-$((2+3))")
    await stream_until(console, "linked-5", sid="s1", timeout=GUEST_TIMEOUT)
    escaped = await ask(4, "read_file", path="/app/etc-link/passwd")
    assert escaped["event"] == "error" and escaped["error"].startswith("path not allowed")
    outside = await ask(5, "search", root="/app/etc-link", pattern="root")
    assert outside["event"] == "error" and "outside" in outside["error"]

    raw = await open_socket(f"/ws/containers/{guest_container.pk}/?sid=raw1", alice_cookie)
    await check_echo_42_typed_key_by_key(raw, GUEST_TIMEOUT)
    await check_resize_changes_stty_size(raw, GUEST_TIMEOUT)
