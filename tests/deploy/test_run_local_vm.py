"""The README's first command, end to end: a fresh clone in a temporary directory, run with
``scripts/run-local.sh`` (setup, image, migrate, admin, node agent, reconciler, web server),
then a container created through the REST API reaches ``running`` and its console socket
echoes a command from the real VM. The output is one progress line per phase, then one block
with the URLs and the admin password; Ctrl-C stops everything, VMs included, and exits 0.

Slow (marked ``vm``): the clone's virtual environment is created (~30 s with pip's cache) and a
real guest boots (about 40 s under TCG). The guest image must be built (skips otherwise, fails
with PEQUEROKU_REQUIRE_VM=1)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from tests.support.deploy import wait_for
from tests.support.host import REPO, free_port

pytestmark = [pytest.mark.vm, pytest.mark.timeout(1500)]

IMAGE_DIR = Path(
    os.environ.get("PEQUEROKU_IMAGE_DIR", Path.home() / ".cache" / "pequeroku" / "images")
)
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class LocalRun:
    proc: subprocess.Popen[bytes]
    base: str
    agent_port: int
    state_dir: Path
    log: Path
    started: float

    def tail(self, lines: int = 60) -> str:
        parts = [self.log.read_text(errors="replace")]
        for name in ("reconcile.log", "node-agent.log"):
            path = self.state_dir / "logs" / name
            if path.exists():
                parts.append(f"--- {name}\n{path.read_text(errors='replace')}")
        return "\n".join("\n".join(p.splitlines()[-lines:]) for p in parts)


def _qemu_pids(data_dir: Path) -> list[int]:
    pids = []
    for pidfile in data_dir.glob("vms/*/qemu.pid"):
        with contextlib.suppress(OSError, ValueError):
            pid = int(pidfile.read_text().strip())
            os.kill(pid, 0)
            pids.append(pid)
    return pids


@pytest.fixture
def local_run(tmp_path: Path) -> Iterator[LocalRun]:
    if not (IMAGE_DIR / "default" / "rootfs.qcow2").exists():
        message = f"the guest image is not built in {IMAGE_DIR} (scripts/build-guest-image.sh)"
        if os.environ.get("PEQUEROKU_REQUIRE_VM"):
            pytest.fail(message)
        pytest.skip(message)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    port, agent_port = free_port(), free_port()
    state_dir = tmp_path / "state"
    env = {
        "PATH": SYSTEM_PATH,
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
        "PEQUEROKU_IMAGE_DIR": str(IMAGE_DIR),
        "PEQUEROKU_PORT": str(port),
        "PEQUEROKU_AGENT_PORT": str(agent_port),
        "PEQUEROKU_STATE_DIR": str(state_dir),
        "PEQUEROKU_RECONCILE_INTERVAL": "2",
    }
    log = tmp_path / "run-local.log"
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["bash", "scripts/run-local.sh"],
            cwd=clone,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    run = LocalRun(proc, f"http://127.0.0.1:{port}", agent_port, state_dir, log, started)
    try:
        yield run
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        for pid in _qemu_pids(state_dir / "node-data"):  # safety net only
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


RULE = "-" * 78


def _ready_block(run: LocalRun) -> str:
    """The block printed once everything answers: between two rules after "ready in"."""
    output = run.log.read_text(errors="replace")
    match = re.search(rf"run-local: ready in [0-9.]+ s\n{RULE}\n(.*?)\n{RULE}\n", output, re.S)
    assert match, output[-3000:]
    return match.group(1)


def _admin_password(run: LocalRun) -> str:
    match = re.search(r"admin user created: username 'admin' password '([^']+)'", run.tail(400))
    assert match, run.tail()
    return match.group(1)


def _admin_site_login(run: LocalRun, password: str) -> None:
    """The printed password logs in to /admin/ through its own form (CSRF included)."""
    with httpx.Client(base_url=run.base, timeout=30) as browser:
        form = browser.get("/admin/login/")
        assert form.status_code == 200
        page = browser.post(
            "/admin/login/?next=/admin/",
            data={
                "username": "admin",
                "password": password,
                "csrfmiddlewaretoken": browser.cookies["csrftoken"],
                "next": "/admin/",
            },
            headers={"Referer": f"{run.base}/admin/login/"},
            follow_redirects=True,
        )
        assert page.status_code == 200
        assert str(page.url).endswith("/admin/"), page.url
        assert "Site administration" in page.text


def _console_echo(run: LocalRun, container_id: int, session_cookie: str) -> str:
    """Send a command to the console socket's first session; return the output seen."""
    url = run.base.replace("http://", "ws://") + f"/ws/containers/{container_id}/"
    seen = ""
    with connect(
        url,
        additional_headers={"Cookie": f"sessionid={session_cookie}", "Origin": run.base},
        open_timeout=30,
    ) as ws:
        hello = json.loads(ws.recv(timeout=60))
        assert hello["type"] == "info" and hello["sessions"] == ["s1"], hello
        ws.send(json.dumps({"data": "echo pequeroku-$((6*7))\n", "sid": "s1"}))
        deadline = time.monotonic() + 90
        while "pequeroku-42" not in seen and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                message = json.loads(ws.recv(timeout=5))
                if message.get("type") == "stream":
                    seen += message["payload"]
    return seen


def test_one_command_setup_boots_a_container_whose_console_echoes(local_run: LocalRun) -> None:
    run = local_run
    wait_for(
        lambda: httpx.get(f"{run.base}/readyz", timeout=5).status_code == 200,
        timeout=900,
        proc=run.proc,
        describe=run.tail,
    )
    wait_for(  # the script prints its block right after its own /readyz check
        lambda: run.log.read_text(errors="replace").count(RULE) >= 2,
        timeout=30,
        proc=run.proc,
        describe=run.tail,
    )
    block = _ready_block(run)
    password = _admin_password(run)
    for url in ("/", "/admin/", "/api/", "/api/schema/swagger-ui/"):
        assert f"{run.base}{url}" in block
    assert f"password '{password}'" in block  # the URLs and the password in one block
    _admin_site_login(run, password)
    with httpx.Client(base_url=run.base, auth=("admin", password), timeout=30) as api:
        types = api.get("/api/container-types/").json()
        small = next(t for t in types if t["container_type_name"] == "small")
        created = api.post(
            "/api/containers/", json={"container_type": small["id"], "container_name": "first"}
        )
        assert created.status_code == 201, created.text
        container_id = created.json()["id"]

        started = time.monotonic()
        wait_for(
            lambda: api.get(f"/api/containers/{container_id}/").json()["status"] == "running",
            timeout=600,
            proc=run.proc,
            describe=run.tail,
        )
        boot_seconds = time.monotonic() - started
        first_running = time.monotonic() - run.started

    login = httpx.post(
        f"{run.base}/api/user/login/", json={"username": "admin", "password": password}
    )
    assert login.status_code == 200, login.text
    output = _console_echo(run, container_id, login.cookies["sessionid"])
    assert "pequeroku-42" in output, output[-2000:]

    run.proc.send_signal(signal.SIGINT)  # Ctrl-C
    status = run.proc.wait(timeout=120)
    print(f"container running {boot_seconds:.1f} s after the API created it")  # noqa: T201

    output = run.log.read_text(errors="replace")
    ready_seconds = float(re.search(r"run-local: ready in ([0-9.]+) s", output).group(1))
    print(f"fresh clone ready in {ready_seconds:.1f} s")  # noqa: T201
    print(f"first container running {first_running:.1f} s after run-local.sh started")  # noqa: T201

    assert status == 0, run.tail()  # Ctrl-C is how one stops it: a clean stop exits 0
    assert output.rstrip().endswith("run-local: stopped")
    assert "Traceback" not in output
    # One progress line per phase with its duration; pip and setuptools stay in the log.
    for phase in ("setup: system packages and Python environment", "guest image", "database",
                  "node agent", "reconcile loop", "web server"):  # fmt: skip
        assert re.search(
            rf"^run-local: {re.escape(phase)}.* \.\.\. done \([0-9.]+ s\)$", output, re.M
        )
    assert "WARNING" not in output and "setuptools" not in output.lower()
    assert "GET /readyz" not in output  # request lines are off unless PEQUEROKU_VERBOSE=1
    assert _qemu_pids(run.state_dir / "node-data") == []
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{run.base}/healthz", timeout=2)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{run.agent_port}/health", timeout=2)
