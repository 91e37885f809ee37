"""The DevAgent's tools: each acts on the user's container through its node driver.

Entry points: ``TOOL_SCHEMAS`` (OpenAI tool definitions), ``tool_run(ctx, name, arguments)``.

Every path is confined to the workspace (``/app``) by ``workspace_path`` before the driver sees
it (the driver confines again, symlinks included). ``create_file`` writes through the one write
path (``vm_manager.guest.files``), so an editor with the file open gets ``file_changed``.
Reads are bounded at the node (``MAX_FILE_READ`` bytes), listings capped per folder. Every
call is audited as ``agent_tool.<name>`` through ``ctx.audit``; what goes back to the model is
cut to ``MAX_TOOL_OUTPUT`` characters, and a failure is told through the domain error map
(``vm_manager.errors``), so the model (and the user reading along) never sees a node's
address, a token or a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from channels.layers import get_channel_layer

from pequeroku.errors import DomainError
from vm_manager.drivers import WORKSPACE_ROOT, NodeDriver, NodeError, PathNotAllowed
from vm_manager.drivers.base import PathTooLong
from vm_manager.errors import domain_error_for
from vm_manager.guest.files import GuestFiles, write_and_publish
from vm_manager.guest.paths import relative_to_workspace, workspace_path
from vm_manager.guest.revisions import revision_store
from vm_manager.guest.search import (
    EXIT_NOT_A_DIRECTORY,
    EXIT_OUTSIDE_WORKSPACE,
    SEARCH_TIMEOUT,
    parse_search_output,
    search_command,
)

MAX_TOOL_OUTPUT = 8_000
MAX_FILE_READ = 1024 * 1024  # bytes the node may send for one read_file
MAX_FILE_WRITE = 200_000
MAX_TREE_ENTRIES = 300
MAX_TREE_DEPTH = 4
EXEC_TIMEOUT = 30.0
MAX_SEARCH_PER_FILE = 20
MAX_SEARCH_LINES = 200
SKIPPED_DIRS = frozenset({".git", "node_modules", "__pycache__", ".venv", "venv", ".mypy_cache"})

AuditFn = Callable[[str, dict[str, Any], bool, str], Awaitable[None]]


@dataclass
class ToolContext:
    driver: NodeDriver | None  # None while the container has no VM
    vm_id: str
    audit: AuditFn
    container_pk: int

    def node(self) -> NodeDriver:
        if self.driver is None:
            raise ToolFailed("the container has no running VM yet")
        return self.driver


class ToolFailed(Exception):
    """A tool could not do its job; the message goes back to the model (and the audit row)."""


def _fn(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": required},
        },
    }


_PATH = {"type": "string", "description": "Path inside /app (absolute or relative to /app)."}

TOOL_SCHEMAS: list[dict[str, Any]] = [
    _fn(
        "read_workspace",
        "List the files and folders of the workspace as a tree.",
        {"path": {**_PATH, "description": "Folder to list (default /app)."}},
        [],
    ),
    _fn("read_file", "Read a text file of the workspace.", {"path": _PATH}, ["path"]),
    _fn(
        "create_file",
        "Create or overwrite a file in the workspace with the given content.",
        {"path": _PATH, "content": {"type": "string"}},
        ["path", "content"],
    ),
    _fn(
        "exec_command",
        "Run a shell command (bash) in /app and get its exit code and output.",
        {"command": {"type": "string"}},
        ["command"],
    ),
    _fn(
        "search",
        "Search the workspace for a text pattern (grep); returns file:line: matches.",
        {
            "pattern": {"type": "string"},
            "path": {**_PATH, "description": "Folder to search (default /app)."},
        },
        ["pattern"],
    ),
]


def bound(text: str, limit: int = MAX_TOOL_OUTPUT) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... {len(text) - limit} more characters cut]"


def _str_arg(arguments: dict[str, Any], key: str, default: str | None = None) -> str:
    value = arguments.get(key, default)
    if not isinstance(value, str) or (value == "" and default is None):
        raise ToolFailed(f"argument {key!r} must be a non-empty string")
    return value


async def _read_workspace(ctx: ToolContext, arguments: dict[str, Any]) -> str:
    root = workspace_path(_str_arg(arguments, "path", WORKSPACE_ROOT) or WORKSPACE_ROOT)
    lines = [root + "/"]

    async def walk(folder: str, depth: int) -> bool:
        """Append ``folder``'s entries depth first; False once the entry budget is spent."""
        listed = await ctx.node().list_dir(ctx.vm_id, folder, limit=MAX_TREE_ENTRIES + 1)
        for entry in listed:
            if len(lines) > MAX_TREE_ENTRIES:
                lines.append(f"[... more than {MAX_TREE_ENTRIES} entries, listing stopped]")
                return False
            is_dir = entry["path_type"] == "directory"
            lines.append(f"{'  ' * (depth + 1)}{entry['name']}{'/' if is_dir else ''}")
            descend = depth + 1 < MAX_TREE_DEPTH and entry["name"] not in SKIPPED_DIRS
            if is_dir and descend and not await walk(entry["path"], depth + 1):
                return False
        return True

    await walk(root, 0)
    return "\n".join(lines)


async def _read_file(ctx: ToolContext, arguments: dict[str, Any]) -> str:
    path = workspace_path(_str_arg(arguments, "path"))
    content = await ctx.node().read_file(ctx.vm_id, path, max_bytes=MAX_FILE_READ)
    return content.decode("utf-8", errors="replace")


async def _create_file(ctx: ToolContext, arguments: dict[str, Any]) -> str:
    raw = _str_arg(arguments, "path")
    path = workspace_path(raw)
    content = arguments.get("content")
    if not isinstance(content, str):
        raise ToolFailed("argument 'content' must be a string")
    if len(content) > MAX_FILE_WRITE:
        raise ToolFailed(f"content is longer than {MAX_FILE_WRITE} characters")
    # Normalising drops a trailing slash, so "a folder" is recognised on what the model wrote.
    if path == WORKSPACE_ROOT or raw.rstrip().endswith("/"):
        raise ToolFailed("path must name a file")
    layer = get_channel_layer()
    files = GuestFiles(ctx.container_pk, ctx.vm_id, ctx.node(), revision_store(layer))
    await write_and_publish(files, layer, path, content.encode(), op="ai_create_file")
    return f"wrote {len(content.encode())} bytes to {path}"


async def _exec_command(ctx: ToolContext, arguments: dict[str, Any]) -> str:
    command = _str_arg(arguments, "command")
    result = await ctx.node().exec(ctx.vm_id, command, timeout=EXEC_TIMEOUT)
    parts = [f"exit code: {result['exit_code']}"]
    if result["timed_out"]:
        parts.append(f"(timed out after {EXEC_TIMEOUT:.0f} s)")
    if result["stdout"]:
        parts.append("stdout:\n" + bound(result["stdout"], MAX_TOOL_OUTPUT // 2))
    if result["stderr"]:
        parts.append("stderr:\n" + bound(result["stderr"], MAX_TOOL_OUTPUT // 2))
    return "\n".join(parts)


async def _search(ctx: ToolContext, arguments: dict[str, Any]) -> str:
    pattern = _str_arg(arguments, "pattern")
    root = workspace_path(_str_arg(arguments, "path", WORKSPACE_ROOT) or WORKSPACE_ROOT)
    # The editor's search command: fixed-string grep that refuses a root resolving outside
    # /app (a symlink), bounded in time inside the guest and in output lines.
    command = search_command(
        relative_to_workspace(root),
        pattern,
        case_sensitive=True,
        include_globs=[],
        exclude_dirs=sorted(SKIPPED_DIRS),
    )
    result = await ctx.node().exec(ctx.vm_id, command, timeout=SEARCH_TIMEOUT + 5)
    if result["exit_code"] == EXIT_NOT_A_DIRECTORY:
        raise ToolFailed(f"{root} is not a directory")
    if result["exit_code"] == EXIT_OUTSIDE_WORKSPACE:
        raise PathNotAllowed(f"{root} resolves outside {WORKSPACE_ROOT}")
    # Matches come as "L<line>: <text>"; the model gets "<file>:<line>: <text>".
    lines = [
        f"{hit['path']}:{match[1:]}"
        for hit in parse_search_output(root, result["stdout"])
        for match in hit["matchs"][:MAX_SEARCH_PER_FILE]
    ][:MAX_SEARCH_LINES]
    if not lines:
        return f"no matches for {pattern!r} under {root}"
    return "\n".join(lines)


_TOOLS: dict[str, Callable[[ToolContext, dict[str, Any]], Awaitable[str]]] = {
    "read_workspace": _read_workspace,
    "read_file": _read_file,
    "create_file": _create_file,
    "exec_command": _exec_command,
    "search": _search,
}


def _audit_metadata(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """What the audit row keeps: paths and commands, never file contents."""
    kept = {k: v for k, v in arguments.items() if k != "content" and isinstance(v, str)}
    if name == "create_file" and isinstance(arguments.get("content"), str):
        kept["content_length"] = len(arguments["content"])
    return {k: (v[:500] if isinstance(v, str) else v) for k, v in kept.items()}


async def tool_run(ctx: ToolContext, name: str, raw_arguments: str) -> str:
    """Run tool ``name`` with the model's JSON ``raw_arguments``; always returns text for it."""
    try:
        arguments = json.loads(raw_arguments or "{}")
    except json.JSONDecodeError:
        arguments = None
    if not isinstance(arguments, dict):
        await ctx.audit(name, {"raw": (raw_arguments or "")[:500]}, False, "bad arguments")
        return "error: the arguments were not a JSON object"
    if name not in _TOOLS:
        await ctx.audit(name, _audit_metadata(name, arguments), False, "unknown tool")
        return f"error: there is no tool named {name!r}"
    try:
        output = await _TOOLS[name](ctx, arguments)
    except PathTooLong:
        message = "error: that path is too long"
    except PathNotAllowed:
        message = f"error: paths must stay inside {WORKSPACE_ROOT}"
    except ToolFailed as exc:
        message = f"error: {exc}"
    except NodeError as exc:
        message = f"error: {domain_error_for(exc).message}"
    except DomainError as exc:
        message = f"error: {exc.message}"
    else:
        await ctx.audit(name, _audit_metadata(name, arguments), True, "")
        return bound(output)
    await ctx.audit(name, _audit_metadata(name, arguments), False, message[:500])
    return bound(message)


def tool_label(name: str) -> str:
    """What the user sees while a tool runs."""
    return f"Using {name}..."


__all__ = [
    "MAX_TOOL_OUTPUT",
    "TOOL_SCHEMAS",
    "ToolContext",
    "bound",
    "tool_label",
    "tool_run",
]
