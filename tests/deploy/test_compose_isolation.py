"""The compose file keeps the node agent (whose guests are root in their VMs) away from the
database and Redis, authenticates both, and publishes nothing but the web port on loopback."""

from __future__ import annotations

import re

import yaml

from tests.support.deploy import parse_env_file
from tests.support.host import REPO

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def networks_of(service: str) -> set[str]:
    return set(SERVICES[service].get("networks", []))


def test_the_node_agent_shares_no_network_with_the_database_or_redis():
    assert networks_of("node-agent") & (networks_of("db") | networks_of("redis")) == set()
    assert networks_of("node-agent") & networks_of("web") == {"nodes"}
    assert networks_of("node-agent") & networks_of("reconciler") == {"nodes"}
    for service in SERVICES:
        if "nodes" in networks_of(service):
            assert service in {"web", "reconciler", "node-agent"}


def test_internal_networks_have_no_way_out_and_only_the_agent_has_the_guests_egress():
    networks = COMPOSE["networks"]

    assert networks["backend"]["internal"] is True
    assert networks["nodes"]["internal"] is True
    assert [s for s in SERVICES if "egress" in networks_of(s)] == ["node-agent"]


def test_only_the_web_port_is_published_and_only_on_loopback():
    published = {name: s["ports"] for name, s in SERVICES.items() if s.get("ports")}

    assert published == {"web": ["127.0.0.1:8000:8000"]}


def test_redis_requires_a_password_that_the_apps_url_carries():
    redis = SERVICES["redis"]
    app_url = SERVICES["web"]["environment"]["REDIS_URL"]

    assert redis["command"][:2] == ["redis-server", "--requirepass"]
    assert "REDIS_PASSWORD" in redis["command"][2]
    assert re.match(r"redis://:\$\{REDIS_PASSWORD[^}]*\}@redis:6379/", app_url)
    assert "REDISCLI_AUTH" in " ".join(redis["healthcheck"]["test"])
    assert "REDIS_PASSWORD" in parse_env_file(REPO / ".env.example")


def test_postgres_authenticates_network_clients_with_scram():
    env = SERVICES["db"]["environment"]

    assert env["POSTGRES_HOST_AUTH_METHOD"] == "scram-sha-256"
    assert "--auth-host=scram-sha-256" in env["POSTGRES_INITDB_ARGS"]
    assert "trust" not in yaml.safe_dump(SERVICES["db"])


def test_the_node_agent_runs_with_the_capabilities_it_needs_and_no_others():
    agent = SERVICES["node-agent"]

    assert agent["cap_drop"] == ["ALL"]
    assert set(agent["cap_add"]) == {"NET_ADMIN", "SETUID", "SETGID", "KILL"}
    assert "no-new-privileges:true" in agent["security_opt"]
    assert agent["init"] is True
    assert "privileged" not in agent
