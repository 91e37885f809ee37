"""Requests per second of GET /api/containers/ and GET /api/user/me/ against a trivial Django
JSON view, same run, under our ASGI stack and under WSGI.

    .venv/bin/python bench/api.py [--containers 50] [--seconds 5] [--concurrency 16]
                                  [--rounds 3] [--port 8765] [--profile 2000]
                                  [--profile-path /api/containers/] [--django-handler]

On a throwaway SQLite database (persistent connections, as in production) holding one user with
``--containers`` containers, one server at a time (loopback, one worker process each):

- ASGI: uvicorn serving ``pequeroku.asgi.application`` (our stack: the body-size limit, the
  protocol router, ``pequeroku.http_handler``);
- WSGI: gunicorn, one sync worker, serving Django's WSGI handler (the same settings,
  middleware and URLconf).

For each it logs in with the session cookie as the frontend does, then alternates the three
endpoints for ``--rounds`` rounds of ``--seconds`` each with ``--concurrency`` connections, and
keeps the best requests/s of each with the server process's CPU time per request (a figure
that depends less on what else the machine runs). It prints both tables and the issue's two
targets: ASGI trivial CPU per request within 1.5x of WSGI's, and ASGI ``/api/containers/``
requests/s at least 0.5x the WSGI trivial view's. Throttling stays on, with rates high enough
never to refuse.

``--profile N`` also runs N requests of ``--profile-path`` (the trivial view by default; logged
in) in this process through each handler (no network) under cProfile and prints where the time
goes. ``--django-handler`` adds Django's stock ``ASGIHandler`` in our stack (what
``pequeroku.http_handler`` replaces) to both, as the figure to compare with.

``/api/user/me/`` is the frontend's 2 s poll; it audits every call (``user.info``) through the
deferred path as in production (``AUDIT_DEFER_SECONDS=1``, a spool in the run's temporary
folder), so its CPU per request includes spooling the row and its share of the batch insert.

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
    # Persistent connections, as production's PostgreSQL settings (DB_CONN_MAX_AGE=60).
    settings.DATABASES["default"]["CONN_MAX_AGE"] = 60
    settings.ROOT_URLCONF = "bench.api"
    # Production's deferred audit path for the polled /api/user/me/ (the test settings write
    # every row in the request).
    settings.AUDIT_DEFER_SECONDS = 1.0
    settings.AUDIT_SPOOL_DIR = Path(db_path).parent / "audit-spool"
    settings.DEBUG = False

    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"anon": "1000000/s", "user": "1000000/s", "login": "100/s"},
    }
    django.setup()


def make_application() -> object:
    """uvicorn --factory entry point (the server process): our ASGI stack."""
    configure(os.environ["BENCH_API_DB"])
    from pequeroku.asgi import application

    if os.environ.get("BENCH_API_DJANGO_HANDLER"):
        return django_handler_application()
    return application


def django_handler_application() -> object:
    """Our stack with Django's stock ``ASGIHandler`` in place of ``pequeroku.http_handler``."""
    from django.core.handlers.asgi import ASGIHandler

    from pequeroku.body_limit import BodySizeLimit

    return BodySizeLimit(ASGIHandler())


def make_wsgi_application() -> object:
    """gunicorn entry point (``bench.api:make_wsgi_application()``): Django's WSGI handler."""
    configure(os.environ["BENCH_API_DB"])
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()


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
            for url in ("/api/containers/", "/api/user/me/", "/bench/trivial/"):
                result = await hammer(client, url, args.seconds, args.concurrency, pid)
                if url not in best or result[0] > best[url][0]:
                    best[url] = result
    return {
        "listed": listed,
        "api": best["/api/containers/"],
        "me": best["/api/user/me/"],
        "trivial": best["/bench/trivial/"],
    }


SERVERS = {
    "ASGI": lambda port: [
        sys.executable, "-m", "uvicorn", "--factory", "bench.api:make_application",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--no-access-log",
        "--log-level", "warning",
    ],
    "WSGI": lambda port: [
        sys.executable, "-m", "gunicorn", "bench.api:make_wsgi_application()",
        "--worker-class", "sync", "--workers", "1", "--bind", f"127.0.0.1:{port}",
        "--log-level", "warning",
    ],
}  # fmt: skip


def serve_and_measure(
    kind: str, args: argparse.Namespace, env: dict[str, str]
) -> dict[str, object]:
    if kind == "ASGI-django":
        env = {**env, "BENCH_API_DJANGO_HANDLER": "1"}
    command = SERVERS[kind.removesuffix("-django")](args.port)
    server = subprocess.Popen(command, cwd=REPO, env=env)
    try:
        time.sleep(0.5)
        # gunicorn serves from its worker, a child of the master: measure the worker's CPU.
        pid = server.pid
        if kind == "WSGI":
            for _ in range(100):
                workers = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
                if workers:
                    pid = int(workers[0])
                    break
                time.sleep(0.1)
        return asyncio.run(measure(args, pid))
    finally:
        server.terminate()
        server.wait(timeout=30)


def profile(
    requests: int, db_path: str, path: str = "/bench/trivial/", django_handler: bool = False
) -> None:
    """cProfile of ``requests`` requests of ``path`` through each handler, in this process."""
    import cProfile
    import io
    import pstats

    configure(db_path)
    import importlib

    from django.core.wsgi import get_wsgi_application

    import pequeroku.asgi

    asgi_app = importlib.reload(pequeroku.asgi).application  # built with the current settings
    if django_handler:
        asgi_app = django_handler_application()

    from django.test import Client

    wsgi_app = get_wsgi_application()
    client = Client()
    assert client.login(username=USERNAME, password=PASSWORD)
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    environ = {
        "REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80", "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1", "wsgi.input": io.BytesIO(), "wsgi.url_scheme": "http",
        "HTTP_COOKIE": cookie,
    }  # fmt: skip
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(),
        "query_string": b"", "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"cookie", cookie.encode())],
        "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 80),
    }  # fmt: skip

    def wsgi_once() -> None:
        statuses = []
        body = wsgi_app(dict(environ), lambda status, headers: statuses.append(status))
        b"".join(body)
        assert statuses[0].startswith("200"), statuses

    async def asgi_once() -> None:
        sent = False

        async def receive() -> dict[str, object]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await asyncio.Event().wait()  # no disconnect: Django cancels this once it answered
            raise AssertionError

        async def send(message: dict[str, object]) -> None:
            pass

        await asgi_app(dict(scope), receive, send)

    async def asgi_many(count: int) -> None:
        for _ in range(count):
            await asgi_once()

    for label, run in (
        ("WSGI", lambda n: [wsgi_once() for _ in range(n)]),
        ("ASGI", lambda n: asyncio.run(asgi_many(n))),
    ):
        run(50)  # warm-up
        cpu, wall = time.process_time(), time.perf_counter()
        run(requests)
        cpu_ms = (time.process_time() - cpu) * 1000 / requests
        wall_ms = (time.perf_counter() - wall) * 1000 / requests
        print(
            f"\n== in-process {label} {path}: {wall_ms:.3f} ms wall, {cpu_ms:.3f} ms CPU "
            "per request"
        )
        profiler = cProfile.Profile()
        profiler.enable()
        run(requests)
        profiler.disable()
        stats = pstats.Stats(profiler)
        hops = sum(
            calls
            for (filename, _, name), (_, calls, *_) in stats.stats.items()  # type: ignore[attr-defined]
            if filename.endswith("asgiref/sync.py") and name == "__call__"
        )
        threads = sum(
            calls
            for (filename, _, name), (_, calls, *_) in stats.stats.items()  # type: ignore[attr-defined]
            if filename.endswith("threading.py") and name == "start"
        )
        print(
            f"per request: {hops / requests:.1f} asgiref sync/async crossings, "
            f"{threads / requests:.1f} threads started"
        )
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(12)
        print("\n".join(line[:150] for line in out.getvalue().splitlines()[4:22]))
    from internal_config.audit_batch import audit_flush

    # The audit rows these requests spooled go in now, while the run's database still exists
    # (otherwise the process's exit flush meets a removed file).
    audit_flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--profile", type=int, default=0, metavar="N")
    parser.add_argument("--profile-path", default="/bench/trivial/", metavar="PATH")
    parser.add_argument(
        "--django-handler",
        action="store_true",
        help="also serve ASGI through Django's stock ASGIHandler (what pequeroku.http_handler "
        "replaces), for comparison",
    )
    args = parser.parse_args()

    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="pequeroku-bench-api-") as tmp:
        db_path = str(Path(tmp) / "bench.sqlite3")
        seed(db_path, args.containers)
        env = {**os.environ, "BENCH_API_DB": db_path, "PYTHONPATH": str(REPO)}
        kinds = [*SERVERS, *(["ASGI-django"] if args.django_handler else [])]
        for kind in kinds:
            results[kind] = serve_and_measure(kind, args, env)
        if args.profile:
            profile(args.profile, db_path, args.profile_path)
            if args.django_handler:
                print("\n-- ASGI through Django's stock ASGIHandler:")
                profile(args.profile, db_path, args.profile_path, django_handler=True)

    print(f"\n{'server':<13} {'endpoint':<38} {'requests/s':>11} {'CPU ms/request':>15}")
    for kind, result in results.items():
        rows = (
            (f"GET /api/containers/ ({result['listed']})", result["api"]),
            ("GET /api/user/me/ (deferred audit row)", result["me"]),
            ("GET trivial Django JSON view", result["trivial"]),
        )
        for label, (rps, cpu) in rows:  # type: ignore[misc]
            print(f"{kind:<13} {label:<38} {rps:>11.1f} {cpu:>15.2f}")
    asgi_api, _ = results["ASGI"]["api"]  # type: ignore[misc]
    asgi_trivial, asgi_trivial_cpu = results["ASGI"]["trivial"]  # type: ignore[misc]
    wsgi_trivial, wsgi_trivial_cpu = results["WSGI"]["trivial"]  # type: ignore[misc]
    cpu_ratio = asgi_trivial_cpu / wsgi_trivial_cpu
    rps_ratio = asgi_api / wsgi_trivial
    print(
        f"ASGI trivial CPU / WSGI trivial CPU: {cpu_ratio:.2f} "
        f"({'meets' if cpu_ratio <= 1.5 else 'MISSES'} <= 1.5)"
    )
    print(
        f"ASGI /api/containers/ req/s / WSGI trivial req/s: {rps_ratio:.2f} "
        f"({'meets' if rps_ratio >= 0.5 else 'MISSES'} >= 0.5)"
    )
    print(f"ASGI /api/containers/ / ASGI trivial req/s: {asgi_api / asgi_trivial:.2f}")
    if "ASGI-django" in results:
        django_api, _ = results["ASGI-django"]["api"]  # type: ignore[misc]
        _, django_cpu = results["ASGI-django"]["trivial"]  # type: ignore[misc]
        print(
            f"with Django's ASGIHandler: trivial CPU / WSGI {django_cpu / wsgi_trivial_cpu:.2f}, "
            f"/api/containers/ req/s / WSGI trivial {django_api / wsgi_trivial:.2f}"
        )


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
