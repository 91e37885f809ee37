"""The editor socket ``/ws/fs/{pk}/`` against the in-memory node (a real directory as /app)."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from typing import Any

import pytest
from channels.db import database_sync_to_async

from internal_config.models import AuditLog
from tests.support.sockets import close_code, event_where, next_event, session_cookie, start_vm
from vm_manager.drivers.memory import InMemoryNodeDriver
from vm_manager.ide import files as editor_service
from vm_manager.models import Container, Team, TeamMembership

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(60),
]

_ids = itertools.count(1)


def path_of(container: Container) -> str:
    return f"/ws/fs/{container.pk}/"


async def connected_editor(open_socket, container, cookie):
    comm = await open_socket(path_of(container), cookie)
    assert await next_event(comm) == {"event": "connected"}
    return comm


async def template_applied(container: Container, timeout: float = 5.0) -> None:
    """Wait for the first connect's background template apply to be recorded."""

    def applied() -> bool:
        return AuditLog.objects.filter(
            action="template.apply", target_id=str(container.pk)
        ).exists()

    deadline = time.monotonic() + timeout
    while not await database_sync_to_async(applied)():
        assert time.monotonic() < deadline, "the default template was not applied"
        await asyncio.sleep(0.05)


@pytest.fixture
def many_sockets_allowed(settings) -> None:
    settings.SOCKETS_MAX_PER_USER = 64


async def request(comm, action: str, **fields: Any) -> dict[str, Any]:
    """Send one action and return its reply (ok or error), skipping broadcasts."""
    req_id = next(_ids)
    await comm.send_json_to({"action": action, "req_id": req_id, **fields})
    return await event_where(comm, lambda e: e.get("req_id") == req_id)


async def broadcast(comm) -> dict[str, Any]:
    return await event_where(comm, lambda e: "req_id" not in e)


# -- connect, access, first-connect template ------------------------------------------------


async def test_connect_says_connected(running_container, alice_cookie, open_socket):
    await connected_editor(open_socket, running_container, alice_cookie)


async def test_first_connect_applies_the_default_template(
    running_container, workspace, alice_cookie, open_socket
):
    await connected_editor(open_socket, running_container, alice_cookie)
    await template_applied(running_container)

    assert "Welcome" in (workspace / "README.md").read_text()
    assert (workspace / ".editorconfig").is_file()
    assert (workspace / "config.json").is_file() and (workspace / "readme.txt").is_file()
    await database_sync_to_async(running_container.refresh_from_db)()
    assert running_container.workspace_initialized


async def test_the_template_is_applied_only_once(
    running_container, workspace, alice_cookie, open_socket
):
    first = await connected_editor(open_socket, running_container, alice_cookie)
    await template_applied(running_container)
    await first.disconnect()
    (workspace / "README.md").write_text("my notes")
    (workspace / ".editorconfig").unlink()

    await connected_editor(open_socket, running_container, alice_cookie)

    assert (workspace / "README.md").read_text() == "my notes"
    assert not (workspace / ".editorconfig").exists()


async def test_the_template_never_overwrites_existing_work(
    running_container, workspace, alice_cookie, open_socket
):
    (workspace / "README.md").write_text("written from the console first")

    await connected_editor(open_socket, running_container, alice_cookie)
    await template_applied(running_container)

    assert (workspace / "README.md").read_text() == "written from the console first"
    assert (workspace / ".editorconfig").is_file()


async def test_a_container_not_running_yet_is_not_initialised(
    user, node, make_container, alice_cookie, open_socket
):
    container = await database_sync_to_async(make_container)(
        user, node=node, status=Container.Status.PROVISIONING
    )
    await connected_editor(open_socket, container, alice_cookie)
    await database_sync_to_async(container.refresh_from_db)()
    assert not container.workspace_initialized


async def test_a_failed_template_apply_is_an_error_event_and_retried_next_time(
    running_container, workspace, alice_cookie, open_socket, monkeypatch
):
    original = InMemoryNodeDriver.write_file

    async def broken(self, *args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(InMemoryNodeDriver, "write_file", broken)
    comm = await open_socket(path_of(running_container), alice_cookie)
    assert await next_event(comm) == {"event": "connected"}
    assert await next_event(comm) == {"event": "error", "req_id": None, "error": "internal error"}

    monkeypatch.setattr(InMemoryNodeDriver, "write_file", original)
    await connected_editor(open_socket, running_container, alice_cookie)
    await template_applied(running_container)
    assert (workspace / "README.md").is_file()


async def test_anonymous_is_closed_with_4401(running_container):
    assert await close_code(path_of(running_container), None) == 4401


async def test_another_users_container_is_closed_with_4403(running_container, bob_cookie):
    assert await close_code(path_of(running_container), bob_cookie) == 4403


@pytest.fixture
def teammate_cookie(user, other_user, running_container) -> str:
    team = Team.objects.create(name="crew", owner=user)
    TeamMembership.objects.get_or_create(team=team, user=user)
    TeamMembership.objects.create(team=team, user=other_user)
    return session_cookie(other_user)


async def test_an_active_teammate_may_open_the_editor(
    running_container, teammate_cookie, open_socket
):
    await connected_editor(open_socket, running_container, teammate_cookie)


async def test_a_superuser_may_open_any_editor(running_container, superuser, open_socket):
    cookie = await database_sync_to_async(session_cookie)(superuser)
    await connected_editor(open_socket, running_container, cookie)


async def test_a_missing_container_is_closed_with_4404(alice_cookie):
    assert await close_code("/ws/fs/999999/", alice_cookie) == 4404


async def test_a_container_being_deleted_is_closed_with_4404(running_container, alice_cookie):
    from django.utils import timezone

    await database_sync_to_async(Container.objects.filter(pk=running_container.pk).update)(
        deleted_at=timezone.now()
    )
    assert await close_code(path_of(running_container), alice_cookie) == 4404


# -- actions ------------------------------------------------------------------------------


async def test_list_dirs_lists_one_level(running_container, workspace, alice_cookie, open_socket):
    comm = await connected_editor(open_socket, running_container, alice_cookie)
    (workspace / "src").mkdir()
    (workspace / "src" / "main.py").write_text("print(1)\n")

    reply = await request(comm, "list_dirs", path="/app")

    assert reply["event"] == "ok" and reply["data"]["path"] == ["/app"]
    entries = {e["path"]: e for e in reply["data"]["entries"]}
    assert entries["/app/src"] == {"path": "/app/src", "name": "src", "path_type": "directory"}
    assert entries["/app/README.md"]["path_type"] == "file"
    assert "/app/src/main.py" not in entries


async def test_list_dirs_takes_comma_separated_paths(
    running_container, workspace, alice_cookie, open_socket
):
    comm = await connected_editor(open_socket, running_container, alice_cookie)
    (workspace / "a").mkdir()
    (workspace / "a" / "one.txt").write_text("1")
    (workspace / "b").mkdir()
    (workspace / "b" / "two.txt").write_text("2")

    reply = await request(comm, "list_dirs", path="/app/a,/app/b,/app/gone")

    assert reply["data"]["path"] == ["/app/a", "/app/b", "/app/gone"]
    assert [e["path"] for e in reply["data"]["entries"]] == ["/app/a/one.txt", "/app/b/two.txt"]


async def test_read_file_returns_content_and_revision(
    running_container, workspace, alice_cookie, open_socket
):
    comm = await connected_editor(open_socket, running_container, alice_cookie)
    (workspace / "notes.txt").write_text("héllo\n")

    reply = await request(comm, "read_file", path="/app/notes.txt")

    assert reply == {
        "event": "ok",
        "req_id": reply["req_id"],
        "data": {"name": "notes.txt", "content": "héllo\n", "length": 6, "found": True, "rev": 0},
    }


async def test_read_file_of_a_missing_file_is_not_found(
    running_container, alice_cookie, open_socket
):
    comm = await connected_editor(open_socket, running_container, alice_cookie)
    reply = await request(comm, "read_file", path="/app/nope.txt")
    assert reply["event"] == "ok"
    assert reply["data"] == {
        "name": "nope.txt",
        "content": "",
        "length": 0,
        "found": False,
        "rev": 0,
    }


async def test_create_dir_creates_and_broadcasts(
    running_container, workspace, alice_cookie, open_socket
):
    comm = await connected_editor(open_socket, running_container, alice_cookie)
    reply = await request(comm, "create_dir", path="/app/pkg/sub")
    assert reply["event"] == "ok" and reply["rev"] == 1
    assert (workspace / "pkg" / "sub").is_dir()
    assert await broadcast(comm) == {
        "event": "file_changed",
        "path": "/app/pkg/sub",
        "rev": 1,
        "meta": {"op": "create_dir"},
    }


async def test_write_file_writes_bumps_the_revision_and_reaches_a_second_editor(
    running_container, workspace, alice_cookie, open_socket
):
    writer = await connected_editor(open_socket, running_container, alice_cookie)
    watcher = await connected_editor(open_socket, running_container, alice_cookie)

    reply = await request(writer, "write_file", path="/app/app.py", content="x = 1\n", prev_rev=0)

    assert reply["event"] == "ok" and reply["rev"] == 1
    assert (workspace / "app.py").read_text() == "x = 1\n"
    assert await broadcast(watcher) == {
        "event": "file_changed",
        "path": "/app/app.py",
        "rev": 1,
        "meta": {"op": "write_file", "bytes": 6},
    }
    read = await request(watcher, "read_file", path="app.py")
    assert read["data"]["rev"] == 1 and read["data"]["content"] == "x = 1\n"


async def test_a_stale_prev_rev_is_a_conflict_and_changes_nothing(
    running_container, workspace, alice_cookie, open_socket
):
    comm = await connected_editor(open_socket, running_container, alice_cookie)
    await request(comm, "write_file", path="/app/a.txt", content="one", prev_rev=0)
    await request(comm, "write_file", path="/app/a.txt", content="two", prev_rev=1)

    reply = await request(comm, "write_file", path="/app/a.txt", content="stale", prev_rev=1)

    assert reply == {"event": "error", "req_id": reply["req_id"], "error": "conflict", "rev": 2}
    assert (workspace / "a.txt").read_text() == "two"


async def test_two_editors_with_the_same_revision_one_wins(
    running_container, workspace, alice_cookie, open_socket
):
    first = await connected_editor(open_socket, running_container, alice_cookie)
    second = await connected_editor(open_socket, running_container, alice_cookie)
    await request(first, "write_file", path="/app/shared.txt", content="base", prev_rev=0)

    won = await request(first, "write_file", path="/app/shared.txt", content="first", prev_rev=1)
    lost = await request(second, "write_file", path="/app/shared.txt", content="late", prev_rev=1)

    assert won["event"] == "ok" and won["rev"] == 2
    assert lost["error"] == "conflict" and lost["rev"] == 2
    assert (workspace / "shared.txt").read_text() == "first"


async def test_write_without_prev_rev_overwrites(
    running_container, workspace, alice_cookie, open_socket
):
    comm = await connected_editor(open_socket, running_container, alice_cookie)
    await request(comm, "write_file", path="/app/f.txt", content="one", prev_rev=0)
    reply = await request(comm, "write_file", path="/app/f.txt", content="forced")
    assert reply["rev"] == 2 and (workspace / "f.txt").read_text() == "forced"


async def test_a_new_file_at_a_deleted_path_needs_no_revision(
    running_container, workspace, alice_cookie, open_socket
):
    comm = await connected_editor(open_socket, running_container, alice_cookie)
    await request(comm, "write_file", path="/app/tmp.txt", content="old", prev_rev=0)
    await request(comm, "delete_path", path="/app/tmp.txt")

    reply = await request(comm, "write_file", path="/app/tmp.txt", content="new", prev_rev=0)

    assert reply["event"] == "ok" and reply["rev"] == 3
    assert (workspace / "tmp.txt").read_text() == "new"


async def test_move_path_moves_and_broadcasts(
    running_container, workspace, alice_cookie, open_socket
):
    comm = await connected_editor(open_socket, running_container, alice_cookie)
    watcher = await connected_editor(open_socket, running_container, alice_cookie)
    (workspace / "old.txt").write_text("data")

    reply = await request(comm, "move_path", src="/app/old.txt", dst="/app/dir/new.txt")

    assert reply["event"] == "ok" and reply["rev"] == 1
    assert (workspace / "dir" / "new.txt").read_text() == "data"
    assert not (workspace / "old.txt").exists()
    assert await broadcast(watcher) == {
        "event": "path_moved",
        "src": "/app/old.txt",
        "dst": "/app/dir/new.txt",
        "rev": 1,
    }


async def test_delete_path_deletes_and_broadcasts(
    running_container, workspace, alice_cookie, open_socket
):
    comm = await connected_editor(open_socket, running_container, alice_cookie)
    watcher = await connected_editor(open_socket, running_container, alice_cookie)
    (workspace / "trash").mkdir()
    (workspace / "trash" / "x").write_text("x")

    reply = await request(comm, "delete_path", path="/app/trash")

    assert reply["event"] == "ok" and reply["rev"] == 1
    assert not (workspace / "trash").exists()
    assert await broadcast(watcher) == {"event": "path_deleted", "path": "/app/trash", "rev": 1}


async def test_deleting_the_workspace_root_is_refused(
    running_container, workspace, alice_cookie, open_socket
):
    comm = await connected_editor(open_socket, running_container, alice_cookie)
    reply = await request(comm, "delete_path", path="/app")
    assert reply["event"] == "error" and "/app" in reply["error"]
    assert workspace.is_dir()


async def test_deleting_a_missing_path_is_an_error(running_container, alice_cookie, open_socket):
    comm = await connected_editor(open_socket, running_container, alice_cookie)
    reply = await request(comm, "delete_path", path="/app/ghost")
    assert reply["event"] == "error" and reply["error"].startswith("not found")


# -- search -------------------------------------------------------------------------------


async def test_search_finds_lines_with_numbers(
    running_container, workspace, alice_cookie, open_socket
):
    comm = await connected_editor(open_socket, running_container, alice_cookie)
    (workspace / "src").mkdir()
    (workspace / "src" / "a.py").write_text("import os\nTODO: fix\nx = 1\n")
    (workspace / "b.txt").write_text("nothing\ntodo later\n")

    reply = await request(comm, "search", root="/app", pattern="todo")

    hits = {hit["path"]: hit["matchs"] for hit in reply["data"]}
    assert hits == {"/app/src/a.py": ["L2: TODO: fix"], "/app/b.txt": ["L2: todo later"]}


async def test_search_can_be_case_sensitive(
    running_container, workspace, alice_cookie, open_socket
):
    comm = await connected_editor(open_socket, running_container, alice_cookie)
    (workspace / "c.txt").write_text("Alpha\nalpha\n")
    reply = await request(comm, "search", root="/app", pattern="Alpha", case=True)
    assert reply["data"] == [{"path": "/app/c.txt", "matchs": ["L1: Alpha"]}]


async def test_search_is_a_fixed_string_not_a_regex(
    running_container, workspace, alice_cookie, open_socket
):
    comm = await connected_editor(open_socket, running_container, alice_cookie)
    (workspace / "r.txt").write_text("a.c\nabc\n")
    reply = await request(comm, "search", root="/app", pattern="a.c")
    assert reply["data"] == [{"path": "/app/r.txt", "matchs": ["L1: a.c"]}]


async def test_search_honours_include_globs_and_root(
    running_container, workspace, alice_cookie, open_socket
):
    comm = await connected_editor(open_socket, running_container, alice_cookie)
    (workspace / "src").mkdir()
    (workspace / "src" / "m.py").write_text("needle\n")
    (workspace / "src" / "m.js").write_text("needle\n")
    (workspace / "top.py").write_text("needle\n")

    reply = await request(
        comm, "search", root="/app/src", pattern="needle", include_globs="*.py,*.md"
    )

    assert [hit["path"] for hit in reply["data"]] == ["/app/src/m.py"]


async def test_search_skips_the_default_excluded_dirs_and_the_requested_ones(
    running_container, workspace, alice_cookie, open_socket
):
    comm = await connected_editor(open_socket, running_container, alice_cookie)
    for folder in ("node_modules/lib", ".git", "__pycache__", ".venv", "vendor", "src"):
        (workspace / folder).mkdir(parents=True)
        (workspace / folder / "f.txt").write_text("needle\n")

    reply = await request(comm, "search", root="/app", pattern="needle", exclude_dirs=["vendor"])

    assert [hit["path"] for hit in reply["data"]] == ["/app/src/f.txt"]


async def test_search_results_are_bounded(running_container, workspace, alice_cookie, open_socket):
    comm = await connected_editor(open_socket, running_container, alice_cookie)
    for index in range(8):
        (workspace / f"big{index}.txt").write_text(
            "match " + "y" * 1000 + "\n" * 1 + "match\n" * 99
        )

    reply = await request(comm, "search", root="/app", pattern="match")

    matches = [line for hit in reply["data"] for line in hit["matchs"]]
    assert len(matches) == editor_service.SEARCH_MAX_RESULTS
    assert all(len(hit["matchs"]) <= editor_service.SEARCH_MAX_PER_FILE for hit in reply["data"])
    longest = max(len(line) for line in matches)
    assert longest <= editor_service.SEARCH_MAX_LINE + len("L1: ")


def test_the_search_command_is_bounded_in_time():
    command = editor_service.search_command(
        "", "x", case_sensitive=False, include_globs=[], exclude_dirs=[".git"]
    )
    assert f"timeout -s KILL {int(editor_service.SEARCH_TIMEOUT)} grep" in command
    assert f"head -n {editor_service.SEARCH_MAX_RESULTS}" in command


async def test_a_search_pattern_cannot_inject_shell(
    running_container, workspace, alice_cookie, open_socket
):
    comm = await connected_editor(open_socket, running_container, alice_cookie)
    reply = await request(comm, "search", root="/app", pattern="'; touch pwned; echo '")
    assert reply["event"] == "ok" and reply["data"] == []
    assert not (workspace / "pwned").exists()


# -- path confinement -----------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["../etc/passwd", "/etc/passwd", "/app/../etc/passwd", "/app2/x"])
async def test_paths_outside_app_are_rejected(
    running_container, workspace, alice_cookie, open_socket, bad
):
    comm = await connected_editor(open_socket, running_container, alice_cookie)
    for action, fields in (
        ("read_file", {"path": bad}),
        ("write_file", {"path": bad, "content": "x"}),
        ("create_dir", {"path": bad}),
        ("delete_path", {"path": bad}),
        ("list_dirs", {"path": bad}),
        ("move_path", {"src": "/app/README.md", "dst": bad}),
        ("search", {"root": bad, "pattern": "root"}),
    ):
        reply = await request(comm, action, **fields)
        assert reply["event"] == "error", (action, reply)
        assert reply["error"].startswith("path not allowed"), (action, reply)
    assert (workspace / "README.md").is_file()


async def test_symlink_escapes_are_rejected(
    running_container, workspace, alice_cookie, open_socket, tmp_path
):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    os.symlink(outside, workspace / "link")
    comm = await connected_editor(open_socket, running_container, alice_cookie)

    for action, fields in (
        ("read_file", {"path": "/app/link/secret.txt"}),
        ("write_file", {"path": "/app/link/new.txt", "content": "x"}),
        ("list_dirs", {"path": "/app/link"}),
        ("search", {"root": "/app/link", "pattern": "secret"}),
    ):
        reply = await request(comm, action, **fields)
        assert reply["event"] == "error", (action, reply)
        assert "outside" in reply["error"], (action, reply)
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


async def test_search_does_not_follow_symlinks_below_the_root(
    running_container, workspace, alice_cookie, open_socket, tmp_path
):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("needle\n")
    os.symlink(outside, workspace / "link")
    comm = await connected_editor(open_socket, running_container, alice_cookie)
    reply = await request(comm, "search", root="/app", pattern="needle")
    assert reply["data"] == []


# -- framing and failures -------------------------------------------------------------------


async def test_an_unknown_action_is_an_error_and_the_socket_stays_open(
    running_container, alice_cookie, open_socket
):
    comm = await connected_editor(open_socket, running_container, alice_cookie)
    reply = await request(comm, "format_disk", path="/app")
    assert reply == {
        "event": "error",
        "req_id": reply["req_id"],
        "error": "unknown action: format_disk",
    }
    assert (await request(comm, "list_dirs", path="/app"))["event"] == "ok"


async def test_a_non_json_frame_is_an_error(running_container, alice_cookie, open_socket):
    comm = await connected_editor(open_socket, running_container, alice_cookie)
    await comm.send_to(text_data="{not json")
    assert await next_event(comm) == {"event": "error", "req_id": None, "error": "invalid JSON"}
    await comm.send_to(text_data="[1, 2]")
    assert (await next_event(comm))["error"] == "expected a JSON object"
    await comm.send_to(bytes_data=b"\x00\x01")
    assert (await next_event(comm))["error"] == "binary frames are not supported"
    assert (await request(comm, "list_dirs", path="/app"))["event"] == "ok"


async def test_missing_fields_are_errors(running_container, alice_cookie, open_socket):
    comm = await connected_editor(open_socket, running_container, alice_cookie)
    assert (await request(comm, "read_file"))["error"] == "'path' must be a non-empty string"
    reply = await request(comm, "write_file", path="/app/x", content=5)
    assert reply["error"] == "'content' must be a string"
    reply = await request(comm, "write_file", path="/app/x", content="", prev_rev="abc")
    assert reply["error"] == "'prev_rev' must be an integer"
    assert (await request(comm, "search", root="/app", pattern=""))["event"] == "error"


async def test_oversized_content_is_refused(running_container, alice_cookie, open_socket):
    comm = await connected_editor(open_socket, running_container, alice_cookie)
    big = "x" * (editor_service.MAX_WRITE_BYTES + 1)
    reply = await request(comm, "write_file", path="/app/big.txt", content=big)
    assert reply["event"] == "error" and "larger than" in reply["error"]


async def test_an_oversized_frame_is_refused(running_container, alice_cookie, open_socket):
    from vm_manager.ide.editor import EditorConsumer

    comm = await connected_editor(open_socket, running_container, alice_cookie)
    await comm.send_to(text_data="x" * (EditorConsumer.max_frame_bytes + 1))
    reply = await next_event(comm)
    assert reply["event"] == "error" and "larger than" in reply["error"]


async def test_an_unexpected_failure_becomes_an_error_event(
    running_container, alice_cookie, open_socket, monkeypatch
):
    async def broken(self, vm_id, path):
        raise RuntimeError("boom")

    comm = await connected_editor(open_socket, running_container, alice_cookie)
    monkeypatch.setattr(InMemoryNodeDriver, "list_dir", broken)
    reply = await request(comm, "list_dirs", path="/app")
    assert reply == {"event": "error", "req_id": reply["req_id"], "error": "internal error"}
    assert (await request(comm, "read_file", path="/app/README.md"))["event"] == "ok"


async def test_a_stopped_vm_answers_not_running(running_container, alice_cookie, open_socket):
    comm = await connected_editor(open_socket, running_container, alice_cookie)
    await InMemoryNodeDriver(running_container.node.name).vm_stop(running_container.vm_id)
    reply = await request(comm, "read_file", path="/app/README.md")
    assert reply["error"] == "The container is not running."


async def test_an_unreachable_node_is_reported(running_container, alice_cookie, open_socket):
    comm = await connected_editor(open_socket, running_container, alice_cookie)
    InMemoryNodeDriver.set_reachable(running_container.node.name, False)
    reply = await request(comm, "list_dirs", path="/app")
    assert reply["error"] == "The container's node is not reachable right now."


async def test_changes_are_audited(running_container, alice_cookie, open_socket):
    comm = await connected_editor(open_socket, running_container, alice_cookie)
    await request(comm, "write_file", path="/app/a.txt", content="abc")
    await request(comm, "read_file", path="/app/a.txt")

    def actions() -> list[tuple[str, dict]]:
        return list(
            AuditLog.objects.filter(target_id=str(running_container.pk))
            .order_by("id")
            .values_list("action", "metadata")
        )

    rows = await database_sync_to_async(actions)()
    assert rows == [
        ("ws.connect", {}),
        ("template.apply", {"files_count": 4}),
        ("container.write_file", {"path": "/app/a.txt", "bytes": 3}),
    ]


# -- many editors ---------------------------------------------------------------------------


async def check_fifty_editors_receive_one_file_changed(open_socket, container, cookie) -> None:
    """Shared with the Redis-layer test: the same fan-out through whichever layer is set."""
    editors = [await connected_editor(open_socket, container, cookie) for _ in range(50)]

    reply = await request(editors[0], "write_file", path="/app/hello.txt", content="hi")

    expected = {
        "event": "file_changed",
        "path": "/app/hello.txt",
        "rev": reply["rev"],
        "meta": {"op": "write_file", "bytes": 2},
    }
    for comm in editors:
        assert await broadcast(comm) == expected
    for comm in editors:
        assert await comm.receive_nothing(timeout=0.05)


async def test_fifty_editors_all_receive_one_file_changed(
    running_container, alice_cookie, open_socket, many_sockets_allowed
):
    await check_fifty_editors_receive_one_file_changed(open_socket, running_container, alice_cookie)


async def test_editors_of_another_container_hear_nothing(
    running_container, user, node, make_container, alice_cookie, open_socket
):
    other = await database_sync_to_async(make_container)(
        user, node=node, status=Container.Status.RUNNING
    )
    await database_sync_to_async(start_vm)(node, other)
    elsewhere = await connected_editor(open_socket, other, alice_cookie)
    comm = await connected_editor(open_socket, running_container, alice_cookie)
    await request(comm, "write_file", path="/app/x.txt", content="x")
    assert await elsewhere.receive_nothing(timeout=0.2)
