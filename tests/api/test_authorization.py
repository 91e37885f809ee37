"""Who may touch a container: every container route and method, for four kinds of caller.

Another user -> 404 (its existence is not revealed), anonymous -> 401/403, a teammate with an
active membership -> allowed, a former teammate (membership inactive) -> 404.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from internal_config.models import AuditLog
from tests.support.api import workspace
from vm_manager.models import Container, FileTemplate


def upload_body() -> dict[str, Any]:
    upload = io.BytesIO(b"data")
    upload.name = "up.txt"
    return {"file": upload}


# (method, url suffix after /api/containers/{pk}/, body factory, request format)
ROUTES: list[tuple[str, str, Callable[[], Any] | None, str | None]] = [
    ("get", "", None, None),
    ("patch", "", lambda: {"name": "renamed"}, "json"),
    ("delete", "", None, None),
    ("post", "power_on/", None, None),
    ("post", "power_off/", None, None),
    ("post", "restart_container/", None, None),
    ("post", "exec_command/", lambda: {"cmd": "true"}, "json"),
    ("post", "upload_file/", upload_body, "multipart"),
    ("get", "download_file/?path=/app/f.txt", None, None),
    ("get", "download_folder/", None, None),
    ("get", "statistics/", None, None),
    ("post", "TEMPLATE_APPLY", None, "json"),
]
ROUTE_IDS = [
    f"{m.upper()} {s or '{pk}'}".replace("TEMPLATE_APPLY", "templates/apply") for m, s, *_ in ROUTES
]


@pytest.fixture
def target(running_container: Container) -> Container:
    (workspace(running_container) / "f.txt").write_text("x")
    return running_container


@pytest.fixture
def template(db: Any) -> FileTemplate:
    return FileTemplate.objects.create(name="T", slug="t")


@pytest.fixture
def caller(request, client_for, other_user, teammate, former_teammate) -> APIClient:
    return {
        "other": lambda: client_for(other_user),
        "anonymous": lambda: client_for(None),
        "teammate": lambda: client_for(teammate),
        "former": lambda: client_for(former_teammate),
    }[request.param]()


def call(client: APIClient, route: tuple, container: Container, template: FileTemplate) -> Any:
    method, suffix, body, fmt = route
    if suffix == "TEMPLATE_APPLY":
        return client.post(
            f"/api/templates/{template.pk}/apply/", {"container_id": container.pk}, format="json"
        )
    url = f"/api/containers/{container.pk}/{suffix}"
    kwargs: dict[str, Any] = {}
    if body is not None:
        kwargs = {"data": body(), "format": fmt}
    response = getattr(client, method)(url, **kwargs)
    if response.streaming:
        response.content_bytes = b"".join(response.streaming_content)  # closes it, as servers do
    return response


def assert_untouched(container: Container) -> None:
    fresh = Container.objects.get(pk=container.pk)
    assert fresh.deleted_at is None
    assert fresh.name == "web"
    assert fresh.desired_state == "running"


@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
@pytest.mark.parametrize("caller", ["other", "former"], indirect=True)
def test_a_container_outside_your_view_is_404(caller, route, target, template):
    response = call(caller, route, target, template)

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert_untouched(target)
    assert not (workspace(target) / "up.txt").exists()


@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
@pytest.mark.parametrize("caller", ["anonymous"], indirect=True)
def test_anonymous_callers_are_refused(caller, route, target, template):
    response = call(caller, route, target, template)

    assert response.status_code in (401, 403)
    assert response.json()["code"] == "not_authenticated"
    assert_untouched(target)


@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
@pytest.mark.parametrize("caller", ["teammate"], indirect=True)
def test_an_active_teammate_is_allowed(caller, route, target, template):
    response = call(caller, route, target, template)

    assert 200 <= response.status_code < 300, response.content[:300]


@pytest.mark.parametrize(
    ("caller", "sees"),
    [("other", False), ("former", False), ("teammate", True)],
    indirect=["caller"],
)
def test_the_list_shows_exactly_the_visible_containers(caller, sees, target):
    ids = [c["id"] for c in caller.get("/api/containers/").json()]

    assert (target.pk in ids) is sees


def test_a_superuser_sees_every_container(client_for, superuser, target):
    assert client_for(superuser).get(f"/api/containers/{target.pk}/").status_code == 200


def test_a_refused_action_is_audited_as_a_failure(client_for, other_user, target):
    client_for(other_user).post(f"/api/containers/{target.pk}/power_off/")

    row = AuditLog.objects.get(action="container.power_off")
    assert not row.success
    assert row.user == other_user
    assert row.target_id == str(target.pk)
    assert row.message.startswith("not_found")
