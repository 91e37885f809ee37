"""M2: the admin's write-only secrets (node tokens, the AI key) stay write-only."""

from __future__ import annotations

import pytest
from django.urls import reverse

from internal_config.models import Config
from tests.admin.test_admin import node_form
from vm_manager.models import Node

pytestmark = pytest.mark.django_db

NODE_TOKEN = "tok-Zq81-secret-node-token"
API_KEY = "sk-live-abcdef0123456789"


@pytest.fixture
def secret_node(make_node) -> Node:
    return make_node("secret", auth_token=NODE_TOKEN)


@pytest.fixture
def api_key(db) -> Config:
    Config.objects.filter(name="openai_api_key").update(value=API_KEY)
    return Config.objects.get(name="openai_api_key")


@pytest.mark.parametrize(
    "query",
    ["auth_token__startswith=tok-Z", "auth_token=" + NODE_TOKEN, "auth_token__regex=^tok"],
)
def test_a_view_only_staff_lookup_on_the_node_token_is_refused(staff_with, secret_node, query):
    client = staff_with("view_node")

    response = client.get(reverse("admin:vm_manager_node_changelist") + "?" + query)

    assert response.status_code == 400
    assert b"secret" not in response.content


def test_a_view_only_staff_lookup_on_the_ai_key_is_refused(staff_with, api_key):
    client = staff_with("view_config")

    response = client.get(
        reverse("admin:internal_config_config_changelist")
        + "?name=openai_api_key&value__startswith=sk-live-a"
    )

    assert response.status_code == 400


def test_a_view_only_staff_member_cannot_read_the_node_token_on_its_page(staff_with, secret_node):
    client = staff_with("view_node")

    response = client.get(reverse("admin:vm_manager_node_change", args=[secret_node.pk]))

    assert response.status_code == 200
    assert NODE_TOKEN.encode() not in response.content


def test_a_view_only_staff_member_cannot_read_the_ai_key_on_its_page(staff_with, api_key):
    client = staff_with("view_config")

    response = client.get(reverse("admin:internal_config_config_change", args=[api_key.pk]))

    assert response.status_code == 200
    assert API_KEY.encode() not in response.content


@pytest.mark.parametrize(
    "change",
    [{"address": "attacker.example"}, {"port": 9999}, {"use_tls": "on"}],
    ids=["address", "port", "tls"],
)
def test_pointing_a_node_elsewhere_without_its_token_is_refused(staff_with, secret_node, change):
    client = staff_with("view_node", "change_node")
    url = reverse("admin:vm_manager_node_change", args=[secret_node.pk])

    response = client.post(url, node_form(secret_node, **change))

    assert response.status_code == 200
    assert "enter the agent token again" in response.content.decode()
    secret_node.refresh_from_db()
    assert (secret_node.address, secret_node.port, secret_node.use_tls) == (
        "127.0.0.1",
        8081,
        False,
    )


def test_pointing_the_ai_provider_elsewhere_without_its_key_is_refused(staff_with, api_key):
    client = staff_with("view_config", "change_config")
    row = Config.objects.get(name="openai_api_url")
    url = reverse("admin:internal_config_config_change", args=[row.pk])

    response = client.post(
        url,
        {"name": row.name, "value": "https://attacker.example/v1", "description": row.description},
    )

    assert response.status_code == 200
    assert "enter the API key again" in response.content.decode()
    assert Config.get_config_value("openai_api_url") == row.value


def test_pointing_the_ai_provider_elsewhere_with_its_key_entered_again_works(staff_with, api_key):
    client = staff_with("view_config", "change_config")
    row = Config.objects.get(name="openai_api_url")
    url = reverse("admin:internal_config_config_change", args=[row.pk])

    response = client.post(
        url,
        {
            "name": row.name,
            "value": "https://llm.example/v1",
            "description": row.description,
            "secret": "sk-for-the-new-provider",
        },
    )

    assert response.status_code == 302
    assert Config.get_config_value("openai_api_url") == "https://llm.example/v1"
    assert Config.get_config_value("openai_api_key") == "sk-for-the-new-provider"


def test_renaming_the_ai_key_row_to_unmask_it_is_refused(staff_with, api_key):
    client = staff_with("view_config", "change_config")
    url = reverse("admin:internal_config_config_change", args=[api_key.pk])

    client.post(url, {"name": "shown_now", "value": "", "description": "x"})
    listing = client.get(reverse("admin:internal_config_config_changelist"))

    assert Config.objects.filter(name="openai_api_key", value=API_KEY).exists()
    assert API_KEY.encode() not in listing.content
