"""Every write into /app reaches the open editors: the AI assistant, a REST upload and a template
apply each produce ``file_changed`` with a new revision, and a save with the old one conflicts."""

from __future__ import annotations

from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from ai_services.agents.tools import ToolContext, tool_run
from tests.support.sockets import event_where
from vm_manager.guest.access import driver_for
from vm_manager.models import Container, FileTemplate, FileTemplateItem

from .test_editor import connected_editor, request

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

TARGET = "/app/notes.txt"


async def saved_by_the_editor(comm) -> int:
    reply = await request(comm, "write_file", path=TARGET, content="mine", prev_rev=None)
    assert reply["event"] == "ok"
    await event_where(comm, lambda e: e.get("event") == "file_changed" and e["rev"] == reply["rev"])
    return reply["rev"]


async def changed_by(comm, op: str) -> dict[str, Any]:
    return await event_where(
        comm,
        lambda e: (
            e.get("event") == "file_changed"
            and e.get("path") == TARGET
            and e.get("meta", {}).get("op") == op
        ),
    )


async def save_with(comm, rev: int) -> dict[str, Any]:
    return await request(comm, "write_file", path=TARGET, content="stale", prev_rev=rev)


async def test_a_file_written_by_the_ai_reaches_the_editor_and_a_stale_save_conflicts(
    running_container, workspace, alice_cookie, open_socket
):
    comm = await connected_editor(open_socket, running_container, alice_cookie)
    seen = await saved_by_the_editor(comm)

    async def audit(*_: Any) -> None:
        pass

    ctx = ToolContext(
        driver=driver_for(running_container),
        vm_id=running_container.vm_id,
        audit=audit,
        container_pk=running_container.pk,
    )
    assert (
        await tool_run(ctx, "create_file", '{"path": "notes.txt", "content": "ai"}')
    ).startswith("wrote")

    changed = await changed_by(comm, "ai_create_file")
    assert changed["rev"] == seen + 1
    reply = await save_with(comm, seen)
    assert (reply["event"], reply["error"], reply["rev"]) == ("error", "conflict", seen + 1)
    assert (workspace / "notes.txt").read_text() == "ai"


def upload(user, container: Container) -> int:
    client = Client()
    client.force_login(user)
    response = client.post(
        f"/api/containers/{container.pk}/upload_file/",
        {"file": SimpleUploadedFile("notes.txt", b"uploaded"), "dest_path": "/app"},
    )
    return response.status_code


async def test_a_rest_upload_reaches_the_editor_and_a_stale_save_conflicts(
    user, running_container, workspace, alice_cookie, open_socket
):
    comm = await connected_editor(open_socket, running_container, alice_cookie)
    seen = await saved_by_the_editor(comm)

    assert await database_sync_to_async(upload)(user, running_container) == 200

    changed = await changed_by(comm, "upload_file")
    assert changed["rev"] == seen + 1
    reply = await save_with(comm, seen)
    assert (reply["error"], reply["rev"]) == ("conflict", seen + 1)
    assert (workspace / "notes.txt").read_bytes() == b"uploaded"


def apply_template(user, container: Container) -> int:
    template = FileTemplate.objects.create(name="Notes", slug="notes")
    FileTemplateItem.objects.create(template=template, path="notes.txt", content="templated")
    client = Client()
    client.force_login(user)
    response = client.post(
        f"/api/templates/{template.pk}/apply/",
        {"container_id": container.pk, "dest_path": "/app", "clean": False},
        content_type="application/json",
    )
    return response.status_code


async def test_a_template_apply_reaches_the_editor_and_a_stale_save_conflicts(
    user, running_container, workspace, alice_cookie, open_socket
):
    comm = await connected_editor(open_socket, running_container, alice_cookie)
    seen = await saved_by_the_editor(comm)

    assert await database_sync_to_async(apply_template)(user, running_container) == 200

    changed = await changed_by(comm, "template")
    assert changed["rev"] == seen + 1
    reply = await save_with(comm, seen)
    assert (reply["error"], reply["rev"]) == ("conflict", seen + 1)
    assert (workspace / "notes.txt").read_text() == "templated"
