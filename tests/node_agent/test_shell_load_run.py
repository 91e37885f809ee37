"""The shell fake reports no guest isolation unless a load run of the production shape says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from node_agent.config import AgentConfig
from node_agent.shell_hypervisor import LOAD_RUN_ISOLATION_ENV, ShellVMManager


@pytest.mark.parametrize(("value", "isolation"), [(None, False), ("1", True), ("yes", False)])
async def test_isolation_is_reported_only_for_a_load_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str | None, isolation: bool
) -> None:
    if value is None:
        monkeypatch.delenv(LOAD_RUN_ISOLATION_ENV, raising=False)
    else:
        monkeypatch.setenv(LOAD_RUN_ISOLATION_ENV, value)
    manager = ShellVMManager(AgentConfig(data_dir=tmp_path, token="t" * 32))

    health = await manager.health()

    assert health["guest_isolation"] is isolation
    assert "a fake without guests or isolation" in str(health["isolation_detail"])
