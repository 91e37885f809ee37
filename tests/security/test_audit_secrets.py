"""L5: what a user types into a command is kept in the audit trail, but not their credentials."""

from __future__ import annotations

import pytest

from internal_config.models import AuditLog

pytestmark = pytest.mark.django_db

TOKEN = "ghp_0123456789abcdefghijABCDEFGHIJ012345"


def test_a_token_typed_into_exec_command_is_not_stored_in_the_audit_trail(
    api_client, running_container
):
    cmd = f"git clone https://bob:{TOKEN}@github.com/bob/app.git && export API_KEY=sk-live-1"

    response = api_client.post(
        f"/api/containers/{running_container.pk}/exec_command/", {"cmd": cmd}, format="json"
    )

    assert response.status_code == 200
    stored = AuditLog.objects.get(action="container.send_command").metadata["cmd"]
    assert TOKEN not in stored and "sk-live-1" not in stored
    assert stored.startswith("git clone https://bob:***@github.com/bob/app.git")
