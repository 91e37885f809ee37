"""Requests per second of GET /api/containers/ against a trivial Django JSON view, same run.

    .venv/bin/python bench/api.py [--containers 50] [--seconds 5] [--concurrency 16]
                                  [--rounds 3] [--port 8765]

Starts uvicorn (one worker, loopback) on a throwaway SQLite database holding one user with
``--containers`` containers, logs in with the session cookie as the frontend does, then
alternates the two endpoints for ``--rounds`` rounds of ``--seconds`` each with
``--concurrency`` keep-alive connections, and prints the best requests/s of each and their
ratio (target >= 0.5), with the server process's CPU time per request of each (a figure that
depends less on what else the machine runs). Throttling stays on, with rates high enough
never to refuse.

The trivial view is plain Django (``JsonResponse({"ok": True})``) behind the same middleware,
served from this module's URLconf next to the project's URLs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from django.http import HttpRequest, JsonResponse
from django.urls import include, path

REPO = Path(__file__).resolve().parents[1]
USERNAME, PASSWORD = "bench", "bench-password"


def trivial(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


def __getattr__(name: str) -> object:
    # The URLconf, built on first use: the project's URLs need settings to import.
    if name == "urlpatterns":
        return [path("bench/trivial/", trivial), path("", include("pequeroku.urls"))]
    raise AttributeError(name)


def configure(db_path: str) -> None:
    """Django settings for both the server process and the seeding step."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "pequeroku.settings_test"
    import django
    from django.conf import settings

    settings.DATABASES["default"]["NAME"] = db_path
    settings.DATABASES["default"]["TEST"] = {"NAME": db_path}
    settings.ROOT_URLCONF = "bench.api"
    settings.DEBUG = False
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"anon": "1000000/s", "user": "1000000/s", "login": "100/s"},
    }
    django.setup()


def make_application() -> object:
    """uvicorn --factory entry point (the server process)."""
    configure(os.environ["BENCH_API_DB"])
    from django.core.asgi import get_asgi_application

    return get_asgi_application()


def seed(db_path: str, containers: int) -> None:
    configure(db_path)
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.utils import timezone

    from vm_manager.models import Container, ContainerType, Node

    call_command("migrate", verbosity=0)
    user = User.objects.create_user(USERNAME, password=PASSWORD)
    node = Node.objects.create(
        name="bench-node",
        address="127.0.0.1",
        auth_token="-",  # noqa: S106 - never used: the benchmark reaches no node
        capacity_vcpus=1000,
        capacity_mem_mb=1 << 24,
        healthy=True,
        heartbeat_at=timezone.now(),
    )
    small = ContainerType.objects.get(container_type_name="small")
    Container.objects.bulk_create(
        Container(
            user=user,
            node=node,
            container_type=small,
            quota=user.quota,
            name=f"bench-{i}",
            memory_mb=small.memory_mb,
            vcpus=small.vcpus,
            disk_gib=small.disk_gib,
            status="running",
        )
        for i in range(containers)
    )


def server_cpu_seconds(pid: int) -> float:
    """User + system CPU of the server process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def hammer(
    client: object, url: str, seconds: float, concurrency: int, pid: int
) -> tuple[float, float]:
    """(requests/s, server CPU milliseconds per request) of ``url`` for ``seconds``."""
    deadline = time.perf_counter() + seconds
    done = 0
    cpu_before = server_cpu_seconds(pid)

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            response = await client.get(url)  # type: ignore[attr-defined]
            assert response.status_code == 200, (url, response.status_code, response.text[:200])
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    return done / elapsed, (server_cpu_seconds(pid) - cpu_before) * 1000 / max(done, 1)


async def measure(args: argparse.Namespace, pid: int) -> dict[str, object]:
    import httpx

    base = f"http://127.0.0.1:{args.port}"
    limits = httpx.Limits(
        max_connections=args.concurrency, max_keepalive_connections=args.concurrency
    )
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        for _ in range(100):
            try:
                await client.get("/bench/trivial/")
                break
            except httpx.TransportError:
                await asyncio.sleep(0.1)
        login = await client.post(
            "/api/user/login/", json={"username": USERNAME, "password": PASSWORD}
        )
        assert login.status_code == 200, login.text
        listed = len((await client.get("/api/containers/")).json())
        best: dict[str, tuple[float, float]] = {}
        for _ in range(args.rounds):
            for url in ("/api/containers/", "/bench/trivial/"):
                result = await hammer(client, url, args.seconds, args.concurrency, pid)
                if url not in best or result[0] > best[url][0]:
                    best[url] = result
    return {"listed": listed, "api": best["/api/containers/"], "trivial": best["/bench/trivial/"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="pequeroku-bench-api-") as tmp:
        db_path = str(Path(tmp) / "bench.sqlite3")
        seed(db_path, args.containers)
        env = {**os.environ, "BENCH_API_DB": db_path, "PYTHONPATH": str(REPO)}
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "bench.api:make_application",
                "--host",
                "127.0.0.1",
                "--port",
                str(args.port),
                "--workers",
                "1",
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            cwd=REPO,
            env=env,
        )
        try:
            result = asyncio.run(measure(args, server.pid))
        finally:
            server.terminate()
            server.wait(timeout=30)

    (api, api_cpu), (trivial_rps, trivial_cpu) = result["api"], result["trivial"]  # type: ignore[misc]
    print(
        f"GET /api/containers/ ({result['listed']} containers): {api:8.1f} requests/s"
        f"  ({api_cpu:.2f} ms server CPU per request)"
    )
    print(
        f"GET trivial Django JSON view:           {trivial_rps:8.1f} requests/s"
        f"  ({trivial_cpu:.2f} ms server CPU per request)"
    )
    print(f"ratio: {api / trivial_rps:.2f} (target >= 0.5)")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
