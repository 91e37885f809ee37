"""DevAgent tools against the in-memory node: confinement, audit, bounded output."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ai_services.agents.tools import MAX_TOOL_OUTPUT, ToolContext, tool_run
from vm_manager.drivers.memory import InMemoryNodeDriver

VM = "pq-tools"


@pytest.fixture
async def ctx() -> tuple[ToolContext, list[tuple[str, dict[str, Any], bool, str]]]:
    driver = InMemoryNodeDriver("tools-node")
    spec = {"vm_id": VM, "vcpus": 1, "memory_mb": 512, "disk_gib": 1, "image": "default"}
    await driver.vm_create(spec)  # type: ignore[arg-type]
    await driver.vm_start(VM)
    await driver.write_file(VM, "/app/src/app.py", b"def main():\n    return 'needle'\n")
    await driver.write_file(VM, "/app/README.md", b"# demo\n")
    audited: list[tuple[str, dict[str, Any], bool, str]] = []

    async def audit(name: str, metadata: dict[str, Any], success: bool, message: str) -> None:
        audited.append((name, metadata, success, message))

    return ToolContext(driver=driver, vm_id=VM, audit=audit, container_pk=1), audited


async def run(ctx: ToolContext, name: str, **arguments: Any) -> str:
    return await tool_run(ctx, name, json.dumps(arguments))


async def test_read_file_returns_the_file_and_is_audited(ctx):
    context, audited = ctx
    assert await run(context, "read_file", path="src/app.py") == (
        "def main():\n    return 'needle'\n"
    )
    assert audited == [("read_file", {"path": "src/app.py"}, True, "")]


@pytest.mark.parametrize("path", ["/etc/passwd", "../etc/passwd", "/app/../root/.ssh/id_rsa"])
async def test_paths_outside_app_are_refused_and_audited_as_failures(ctx, path):
    context, audited = ctx
    assert await run(context, "read_file", path=path) == "error: paths must stay inside /app"
    assert audited[0][0] == "read_file"
    assert audited[0][2] is False


async def test_symlink_out_of_the_workspace_is_refused(ctx):
    context, _ = ctx
    await context.node().exec(VM, "ln -s /etc/hostname escape")
    assert await run(context, "read_file", path="escape") == "error: paths must stay inside /app"


async def test_create_file_writes_into_the_workspace_without_auditing_the_content(ctx):
    context, audited = ctx
    result = await run(context, "create_file", path="notes/todo.txt", content="ship it\n")
    assert result == "wrote 8 bytes to /app/notes/todo.txt"
    assert await context.node().read_file(VM, "/app/notes/todo.txt") == b"ship it\n"
    assert audited == [("create_file", {"path": "notes/todo.txt", "content_length": 8}, True, "")]


@pytest.mark.parametrize("path", ["/app", "notes/", "/app/src/"])
async def test_create_file_refuses_a_folder_path(ctx, path):
    context, _ = ctx
    before = await context.node().list_dir(VM, "/app")
    result = await run(context, "create_file", path=path, content="x")
    assert result == "error: path must name a file"
    assert await context.node().list_dir(VM, "/app") == before


async def test_exec_command_reports_exit_code_and_output(ctx):
    context, _ = ctx
    result = await run(context, "exec_command", command="echo out; echo err >&2; exit 3")
    assert result == "exit code: 3\nstdout:\nout\n\nstderr:\nerr\n"


async def test_search_finds_matches_with_file_and_line(ctx):
    context, _ = ctx
    result = await run(context, "search", pattern="needle")
    assert "/app/src/app.py:2:" in result


async def test_search_refuses_a_root_that_links_out_of_the_workspace(ctx):
    context, _ = ctx
    await context.node().exec(VM, "ln -s /etc escape")
    assert await run(context, "search", pattern="root", path="escape") == (
        "error: paths must stay inside /app"
    )


async def test_read_workspace_lists_the_tree(ctx):
    context, _ = ctx
    assert await run(context, "read_workspace") == "/app/\n  README.md\n  src/\n    app.py"


async def test_tool_output_sent_to_the_model_is_bounded(ctx):
    context, _ = ctx
    await context.node().write_file(VM, "/app/big.txt", b"a" * (MAX_TOOL_OUTPUT * 3))
    result = await run(context, "read_file", path="big.txt")
    assert len(result) < MAX_TOOL_OUTPUT + 100
    assert result.endswith(f"[... {MAX_TOOL_OUTPUT * 2} more characters cut]")


async def test_unknown_tool_and_bad_arguments_are_reported_to_the_model(ctx):
    context, audited = ctx
    assert await run(context, "rm_rf") == "error: there is no tool named 'rm_rf'"
    assert await tool_run(context, "read_file", "{not json") == (
        "error: the arguments were not a JSON object"
    )
    assert [a[2] for a in audited] == [False, False]


async def test_tools_on_a_stopped_vm_explain_instead_of_failing_the_turn(ctx):
    context, _ = ctx
    await context.node().vm_stop(VM)
    result = await run(context, "read_file", path="README.md")
    assert result == "error: The container is not running."


async def test_read_file_asks_the_node_for_at_most_the_tool_limit(ctx, monkeypatch):
    from ai_services.agents import tools

    context, audited = ctx
    monkeypatch.setattr(tools, "MAX_FILE_READ", 4)

    result = await run(context, "read_file", path="README.md")

    assert result.startswith("error: ") and "larger than 4 bytes" in result
    assert audited[-1][2] is False
