"""The editor's reads are bounded at the node and its listings capped (issue 13, M7)."""

from __future__ import annotations

import pytest

from vm_manager.drivers.memory import InMemoryNodeDriver
from vm_manager.ide import files as editor_files

from .test_editor import connected_editor, request

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


async def test_an_editor_read_asks_the_node_for_at_most_the_editor_limit(
    running_container, workspace, alice_cookie, open_socket, monkeypatch
):
    asked: list[int | None] = []
    original = InMemoryNodeDriver.read_file

    async def spy(self, vm_id, path, max_bytes=None):
        asked.append(max_bytes)
        return await original(self, vm_id, path, max_bytes=max_bytes)

    monkeypatch.setattr(InMemoryNodeDriver, "read_file", spy)
    (workspace / "big.log").write_bytes(b"x" * (editor_files.MAX_READ_BYTES + 1))
    comm = await connected_editor(open_socket, running_container, alice_cookie)

    reply = await request(comm, "read_file", path="/app/big.log")

    assert reply["event"] == "error" and "larger than" in reply["error"]
    assert asked == [editor_files.MAX_READ_BYTES]


async def test_a_folder_with_more_entries_than_the_cap_is_cut_and_named_as_truncated(
    running_container, workspace, alice_cookie, open_socket, monkeypatch
):
    monkeypatch.setattr(editor_files, "MAX_DIR_ENTRIES", 5)
    (workspace / "many").mkdir()
    for index in range(8):
        (workspace / "many" / f"f{index}").write_text("")
    comm = await connected_editor(open_socket, running_container, alice_cookie)

    reply = await request(comm, "list_dirs", path="/app/many,/app")

    assert reply["event"] == "ok"
    assert len([e for e in reply["data"]["entries"] if e["path"].startswith("/app/many/")]) == 5
    assert reply["data"]["truncated"] == ["/app/many"]
