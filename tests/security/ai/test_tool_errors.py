"""L2: what an AI tool answers when the node fails never names the node, its token or a trace.

The tool's text goes to the model and is shown to the user, so it must carry no more than the
REST API would say about the same failure.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest

from ai_services.agents.tools import ToolContext, tool_run
from vm_manager.drivers.http import HttpNodeDriver

TOKEN = "node-secret-token-0123456789"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def unreachable_node_tools() -> ToolContext:
    async def audit(*_: Any) -> None:
        pass

    driver = HttpNodeDriver(f"http://127.0.0.1:{closed_port()}", TOKEN, timeout=2.0)
    return ToolContext(driver=driver, vm_id="pq-x", audit=audit, container_pk=1)


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("read_file", {"path": "README.md"}),
        ("create_file", {"path": "a.txt", "content": "x"}),
        ("read_workspace", {}),
        ("exec_command", {"command": "ls"}),
        ("search", {"pattern": "x"}),
    ],
)
async def test_an_unreachable_node_is_not_named_to_the_model(
    unreachable_node_tools, tool, arguments
):
    answer = await tool_run(unreachable_node_tools, tool, json.dumps(arguments))

    assert answer == "error: The container's node is not reachable right now."
    assert "127.0.0.1" not in answer and TOKEN not in answer and "Traceback" not in answer
