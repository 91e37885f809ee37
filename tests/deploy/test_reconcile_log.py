"""One log line per reconcile action on ``pequeroku.reconcile``, never the node token."""

from __future__ import annotations

import json
import logging

import pytest

from pequeroku.logging import JsonFormatter
from vm_manager.reconciler import reconcile_once


@pytest.mark.django_db
def test_each_reconcile_action_logs_one_line_without_the_node_token(
    caplog: pytest.LogCaptureFixture, user, node, make_container
) -> None:
    first = make_container(user, node=node, desired_state="running")
    second = make_container(user, node=node, desired_state="running")
    caplog.set_level(logging.INFO, logger="pequeroku.reconcile")

    reconcile_once()

    records = [r for r in caplog.records if r.name == "pequeroku.reconcile"]
    assert sorted(r.container_id for r in records) == sorted([first.pk, second.pk])
    assert all(r.ok for r in records)
    assert node.auth_token not in caplog.text


@pytest.mark.django_db
def test_reconcile_action_lines_render_as_json(
    caplog: pytest.LogCaptureFixture, user, node, make_container
) -> None:
    container = make_container(user, node=node, desired_state="running")
    caplog.set_level(logging.INFO, logger="pequeroku.reconcile")
    reconcile_once()
    [record] = [r for r in caplog.records if r.name == "pequeroku.reconcile"]

    payload = json.loads(JsonFormatter().format(record))

    assert payload["container_id"] == container.pk
    assert payload["vm_id"] == container.vm_id
    assert payload["ok"] is True
    assert payload["message"].startswith(f"reconcile container {container.pk} ")
