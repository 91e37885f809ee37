"""The OpenAPI schema is complete, valid and warning-free."""

from __future__ import annotations

import pytest
import yaml
from django.core.management import call_command

EXPECTED_OPERATIONS = {
    ("post", "/api/user/login/"),
    ("post", "/api/user/logout/"),
    ("get", "/api/user/me/"),
    ("get", "/api/container-types/"),
    ("get", "/api/containers/"),
    ("post", "/api/containers/"),
    ("get", "/api/containers/{id}/"),
    ("patch", "/api/containers/{id}/"),
    ("delete", "/api/containers/{id}/"),
    ("post", "/api/containers/{id}/power_on/"),
    ("post", "/api/containers/{id}/power_off/"),
    ("post", "/api/containers/{id}/restart_container/"),
    ("post", "/api/containers/{id}/exec_command/"),
    ("post", "/api/containers/{id}/upload_file/"),
    ("get", "/api/containers/{id}/download_file/"),
    ("get", "/api/containers/{id}/download_folder/"),
    ("get", "/api/containers/{id}/statistics/"),
    ("get", "/api/templates/"),
    ("post", "/api/templates/"),
    ("get", "/api/templates/{id}/"),
    ("put", "/api/templates/{id}/"),
    ("patch", "/api/templates/{id}/"),
    ("delete", "/api/templates/{id}/"),
    ("post", "/api/templates/{id}/apply/"),
}


@pytest.fixture(scope="module")
def schema(tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("schema") / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(path))
    return yaml.safe_load(path.read_text())


def test_schema_lists_every_route_of_the_contract(schema):
    operations = {(method, path) for path, item in schema["paths"].items() for method in item}

    assert operations == EXPECTED_OPERATIONS


def test_every_operation_documents_its_errors(schema):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            codes = set(operation["responses"])
            assert "429" in codes, (method, path)
            if path != "/api/user/login/":
                assert "403" in codes, (method, path)
            if "{id}" in path:
                assert "404" in codes, (method, path)


def test_quota_and_capacity_errors_are_documented_on_create(schema):
    codes = set(schema["paths"]["/api/containers/"]["post"]["responses"])

    assert {"201", "400", "403", "503"} <= codes


def test_lists_are_arrays(schema):
    listing = schema["paths"]["/api/containers/"]["get"]["responses"]["200"]
    ref = listing["content"]["application/json"]["schema"]["$ref"]
    body = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]

    assert body["type"] == "array"
    assert body["items"] == {"$ref": "#/components/schemas/Container"}
    names = {p["name"] for p in schema["paths"]["/api/containers/"]["get"]["parameters"]}
    assert names == {"limit", "offset"}
