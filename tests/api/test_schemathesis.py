"""Property-based run of every documented operation against the live schema.

Schemathesis reads the schema /api/schema/ serves (generated in process: the endpoint itself
needs a login) and calls the WSGI application; for each operation it generates
valid and invalid requests (up to ``MAX_EXAMPLES`` per operation in the fuzzing phase, plus its
example and coverage phases) and checks every answer: no 5xx, a documented status code and
content type, a body matching the documented schema. Half the cases that name a container or
a template are pointed at a real one (a running container, a public template), so the happy
paths are exercised too; ``exec_command`` is pointed at a stopped container only, so generated
text is never run as a shell command.
"""

from __future__ import annotations

import base64
import json
import random
from typing import Any

import pytest
import schemathesis
from django.core.cache import cache
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, settings

from pequeroku.wsgi import application
from tests.support.api import start_vm
from vm_manager.models import FileTemplate, FileTemplateItem

MAX_EXAMPLES = 200
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
]


def load_schema() -> Any:
    config = schemathesis.Config.from_dict(
        {
            "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
            "checks": {
                "enabled": False,
                **{name: {"enabled": True} for name in CHECKS},
            },
            "seed": 20261127,
        }
    )
    document = SchemaGenerator().get_schema(request=None, public=True)
    schema = schemathesis.openapi.from_dict(
        json.loads(OpenApiJsonRenderer().render(document)), config=config
    )
    schema.app = application  # what from_wsgi sets: cases call the WSGI application
    return schema


# Loaded at collection: generating the schema needs no database, only the URLconf.
schema = load_schema()


@pytest.fixture
def world(user, password, node, make_container) -> dict[str, Any]:
    running = start_vm(make_container(user, node=node, name="fuzz"))
    stopped = make_container(user, node=node, name="still", desired_state="stopped")
    template = FileTemplate.objects.create(name="Fuzz", slug="fuzz")
    FileTemplateItem.objects.create(template=template, path="a.txt", content="a")
    token = base64.b64encode(f"{user.username}:{password}".encode()).decode()
    return {
        "running": running,
        "stopped": stopped,
        "template": template,
        "headers": {"Authorization": f"Basic {token}"},
        "random": random.Random(7),  # noqa: S311 - choosing test targets, not secrets
    }


def aim(case: Any, world: dict[str, Any]) -> None:
    """Point half the cases that take an id at real objects."""
    params = case.path_parameters or {}
    if "id" not in params or world["random"].random() < 0.5:
        return
    path = case.operation.path
    if path.startswith("/api/templates/"):
        params["id"] = world["template"].pk
        if isinstance(case.body, dict) and "container_id" in case.body:
            case.body["container_id"] = world["running"].pk
    elif path.endswith("/exec_command/"):
        params["id"] = world["stopped"].pk
    else:
        params["id"] = world["running"].pk


@pytest.mark.django_db
@schema.parametrize()
@settings(
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_every_operation_answers_as_documented(case, world):
    cache.clear()  # throttle counters: 429 is documented, but it would hide everything else
    aim(case, world)
    case.call_and_validate(headers=world["headers"])
