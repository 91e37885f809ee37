"""A browser IDE on the same origin through the sample nginx file (deploy/nginx/pequeroku.conf),
with a real nginx on a port other than 80: login, then an unsafe request passes Django's CSRF
Origin check, and a WebSocket reaches the backend through the upgrade."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.support.deploy import VENV_BIN, base_env, stop_group, wait_for
from tests.support.host import REPO, free_port

SAMPLE = REPO / "deploy" / "nginx" / "pequeroku.conf"
NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
)
pytestmark = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (setup.sh installs nginx-light)"
)

PREPARE = """
import django
django.setup()
from django.core.management import call_command
from django.contrib.auth.models import User
call_command("migrate", verbosity=0)
User.objects.create_user("ada", password="a long enough password 1")
"""


@dataclass
class Site:
    origin: str
    backend_log: Path


def nginx_config(tmp: Path, listen: int, backend: int, host_rule: str) -> Path:
    server = SAMPLE.read_text()
    server = server.replace("listen 8080;", f"listen 127.0.0.1:{listen};")
    server = server.replace("server 127.0.0.1:8000;", f"server 127.0.0.1:{backend};")
    server = server.replace("root /srv/pequeroku-ide;", f"root {tmp / 'ide'};")
    server = server.replace(
        "proxy_set_header Host $http_host;", f"proxy_set_header Host {host_rule};"
    )
    (tmp / "ide").mkdir()
    (tmp / "site.conf").write_text(server)
    user = "user root root;\n" if os.geteuid() == 0 else ""
    temp = "\n".join(
        f"    {kind}_temp_path {tmp / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    main = tmp / "nginx.conf"
    main.write_text(
        f"{user}daemon off;\nworker_processes 1;\npid {tmp / 'nginx.pid'};\n"
        f"error_log {tmp / 'error.log'} warn;\nevents {{}}\n"
        f"http {{\n    access_log off;\n{temp}\n    include {tmp / 'site.conf'};\n}}\n"
    )
    return main


@pytest.fixture(params=["$http_host"])
def site(request: pytest.FixtureRequest, project_copy: Path, tmp_path: Path) -> Iterator[Site]:
    env = base_env(
        DJANGO_SETTINGS_MODULE="pequeroku.settings", DEBUG="true", RECONCILE_IN_BACKGROUND="false"
    )
    python = str(VENV_BIN / "python")
    subprocess.run([python, "-c", PREPARE], cwd=project_copy, env=env, check=True, timeout=120)
    backend_port, nginx_port = free_port(), free_port()
    backend_log = tmp_path / "backend.log"
    with backend_log.open("wb") as out:
        backend = subprocess.Popen(
            [python, "-m", "uvicorn", "pequeroku.asgi:application", "--host", "127.0.0.1",
             "--port", str(backend_port), "--lifespan", "off"],
            cwd=project_copy, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    nginx_dir = tmp_path / "nginx"
    nginx_dir.mkdir()
    config = nginx_config(nginx_dir, nginx_port, backend_port, request.param)
    nginx = subprocess.Popen(
        [NGINX, "-c", str(config), "-p", str(nginx_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    origin = f"http://127.0.0.1:{nginx_port}"
    try:
        wait_for(
            lambda: httpx.get(f"{origin}/healthz", timeout=2).status_code == 200,
            60,
            backend,
            backend_log.read_text,
        )
        yield Site(origin, backend_log)
    finally:
        stop_group(nginx)
        stop_group(backend)


def login(client: httpx.Client, origin: str) -> None:
    response = client.post(
        "/api/user/login/",
        json={"username": "ada", "password": "a long enough password 1"},
        headers={"Origin": origin},
    )
    assert response.status_code == 200, response.text


def unsafe_post(client: httpx.Client, origin: str, path: str, **kwargs: object) -> httpx.Response:
    headers = {"Origin": origin, "X-CSRFToken": client.cookies["csrftoken"]}
    return client.post(path, headers=headers, **kwargs)


def test_login_then_an_unsafe_request_pass_the_csrf_origin_check(site: Site) -> None:
    with httpx.Client(base_url=site.origin, timeout=30) as client:
        login(client, site.origin)
        [small, *_] = client.get("/api/container-types/").json()

        create = unsafe_post(
            client, site.origin, "/api/containers/", json={"container_type": small["id"]}
        )
        logout = unsafe_post(client, site.origin, "/api/user/logout/")

    # No compute node in this test: the create is refused for capacity, after CSRF passed.
    assert create.status_code == 503, create.text
    assert create.json()["code"] == "no_capacity"
    assert logout.status_code == 200, logout.text


@pytest.mark.parametrize("site", ["$host"], indirect=True)
def test_the_host_rule_without_the_port_fails_the_origin_check(site: Site) -> None:
    # What the original project's nginx file did: the backend sees Host 127.0.0.1 (no port),
    # the browser's Origin says 127.0.0.1:<port>.
    with httpx.Client(base_url=site.origin, timeout=30) as client:
        login(client, site.origin)

        logout = unsafe_post(client, site.origin, "/api/user/logout/")

    assert logout.status_code == 403
    assert "Origin checking failed" in logout.json()["detail"]


def test_a_websocket_is_upgraded_through_the_proxy(site: Site) -> None:
    with httpx.Client(base_url=site.origin, timeout=30) as client:
        login(client, site.origin)
        cookie = f"sessionid={client.cookies['sessionid']}"

    url = site.origin.replace("http://", "ws://") + "/ws/containers/999999/"
    headers = {"Cookie": cookie, "Origin": site.origin}
    with (
        pytest.raises((ConnectionClosed, InvalidStatus)) as closed,
        connect(url, additional_headers=headers) as socket,
    ):
        socket.recv(timeout=10)

    # The consumer itself answered: no such container for this user.
    assert isinstance(closed.value, ConnectionClosed), closed.value
    assert closed.value.rcvd.code == 4404


def test_the_landing_page_shows_through_the_proxy_without_a_frontend(site: Site) -> None:
    response = httpx.get(f"{site.origin}/", timeout=10)

    assert response.status_code == 200
    assert "Pequeroku" in response.text
