"""What can be checked of the Docker build here: the files it copies, the scripts it runs,
the compose file and .env.example."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import yaml

from tests.support.deploy import parse_env_file
from tests.support.host import REPO

DOCKERFILE = (REPO / "Dockerfile").read_text()
SCRIPTS = ["entrypoint.sh", "scripts/run-local.sh"]


def _instructions() -> list[str]:
    """Dockerfile instructions with continuation lines joined."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE)
    return [line.strip() for line in joined.splitlines() if line.strip() and line[0] != "#"]


def _stages() -> list[str]:
    return [m.group(1) for line in _instructions() if (m := re.match(r"FROM \S+ AS (\S+)", line))]


def test_every_file_the_dockerfile_copies_from_the_context_exists() -> None:
    sources = []
    for line in _instructions():
        if not line.startswith("COPY ") or "--from=" in line:
            continue
        sources += line.split()[1:-1]

    assert sources, "no COPY found"
    assert [s for s in sources if not (REPO / s).exists()] == []


def test_dockerignore_keeps_secrets_and_local_state_out_but_not_copied_files() -> None:
    ignored = (REPO / ".dockerignore").read_text().split()
    copied = [s for line in _instructions() if line.startswith("COPY ") and "--from" not in line
              for s in line.split()[1:-1]]  # fmt: skip

    assert {".env", ".git", ".venv", ".local", "db.sqlite3"} <= set(ignored)
    assert not set(copied) & set(ignored)


def test_dockerfile_defaults_to_python_313_slim_and_a_web_stage_last() -> None:
    assert "ARG BASE_IMAGE=python:3.13-slim" in DOCKERFILE
    assert _stages()[-1] == "web"


def test_web_stage_runs_unprivileged_with_a_healthcheck_through_entrypoint() -> None:
    web = DOCKERFILE.split("AS web", 1)[1]

    assert re.search(r"^USER pequeroku$", web, re.M)
    assert "HEALTHCHECK" in web and "/healthz" in web
    assert 'ENTRYPOINT ["/app/entrypoint.sh"]' in web


def test_dockerfile_installs_runtime_dependencies_without_the_dev_extra() -> None:
    assert "['project']['dependencies']" in DOCKERFILE
    assert "[dev]" not in DOCKERFILE
    assert "optional-dependencies" not in DOCKERFILE


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_is_executable_and_parses(script: str) -> None:
    path = REPO / script

    assert os.access(path, os.X_OK)
    subprocess.run(["bash", "-n", str(path)], check=True)


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_passes_shellcheck(script: str) -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (scripts/setup.sh installs it)")

    result = subprocess.run(
        ["shellcheck", "-x", script], cwd=REPO, capture_output=True, text=True, check=False
    )

    assert result.returncode == 0, result.stdout


def test_compose_has_web_db_redis_node_agent_and_reconciler() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]

    assert set(services) == {"web", "db", "redis", "node-agent", "reconciler"}
    assert services["db"]["image"] == "postgres:16"
    assert services["redis"]["image"] == "redis:7"
    assert "reconcile --loop" in " ".join(services["reconciler"]["command"])
    assert {services[s]["build"]["target"] for s in ("web", "node-agent")} <= set(_stages())


def test_kvm_override_passes_dev_kvm_to_the_node_agent() -> None:
    override = yaml.safe_load((REPO / "docker-compose.kvm.yml").read_text())

    assert override["services"]["node-agent"]["devices"] == ["/dev/kvm:/dev/kvm"]


def test_env_example_lists_every_variable_the_settings_read() -> None:
    settings_source = (REPO / "pequeroku" / "settings.py").read_text()
    read = set(re.findall(r'env_(?:str|bool|int|list)\(\s*"([A-Z0-9_]+)"', settings_source))

    assert read - set(parse_env_file(REPO / ".env.example")) == set()


def test_env_example_lists_every_variable_the_entrypoint_reads() -> None:
    entrypoint = (REPO / "entrypoint.sh").read_text()
    read = set(re.findall(r"\$\{([A-Z][A-Z0-9_]+):-", entrypoint))
    read -= {"PYTHON", "DJANGO_SETTINGS_MODULE"}  # internal: the image sets both

    assert read - set(parse_env_file(REPO / ".env.example")) == set()
