"""Time to the first answer chunk through the AI socket, minus the provider's own.

    .venv/bin/python bench/ai_stream.py [--turns 60] [--warmup 3] [--first-token-ms 50]
        [--postgres postgresql://postgres@127.0.0.1:5432/postgres]
        [--redis redis://127.0.0.1:6379/0]

Production-shaped: the web service runs as its own process (Uvicorn serving
``pequeroku.asgi`` with the production settings, ``DEBUG=false``: PostgreSQL with persistent
connections, Redis for the channel layer and the cache, session cookie and Origin check), the
in-memory node driver stands in for the node, and the fake OpenAI-compatible server
(tests/ai/fake_provider.py) runs in this process. For each turn it:

- sends ``{"text": ...}`` over a real WebSocket and times the first ``text`` event;
- reads the provider's own time to first token for that very request (request read -> first
  chunk written, measured inside the fake server);
- overhead = socket time to first text - provider time to first token.

It also times the same request straight through the ``openai`` client (no socket, no
database), to show how much of the overhead is the HTTP client itself. Prints median, p90 and
max of each and whether the median overhead meets the target (<= 20 ms). The database
``pequeroku_bench_ai`` is created and dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TARGET_MS = 20.0
BENCH_PG_DB = "pequeroku_bench_ai"


def bench_env(postgres: str, redis: str) -> dict[str, str]:
    """The environment of both processes: production settings on the bench database."""
    import psycopg

    info = psycopg.conninfo.conninfo_to_dict(postgres)
    from scripts.prod_shape import loopback_production_env

    return {
        **loopback_production_env(secrets.token_urlsafe(48)),
        "DB_NAME": BENCH_PG_DB,
        "DB_USER": str(info.get("user", "postgres")),
        "DB_PASSWORD": str(info.get("password", "")),
        "DB_HOST": str(info.get("host", "127.0.0.1")),
        "DB_PORT": str(info.get("port", "5432")),
        "NODE_DRIVER": "vm_manager.drivers.memory.InMemoryNodeDriver",
        "LOG_LEVEL": "WARNING",
        "RECONCILE_IN_BACKGROUND": "false",
        "REDIS_URL": redis,
        "REDIS_PREFIX": f"pqbench-ai-{secrets.token_hex(4)}:",
    }


def setup_django(postgres: str, env: dict[str, str]) -> None:
    import psycopg

    with psycopg.connect(postgres, dbname="postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{BENCH_PG_DB}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{BENCH_PG_DB}"')
    os.environ.update(env)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def prepare(provider: Any) -> tuple[int, str]:
    """A user with uses to spare, a running container with a VM; returns (pk, session id)."""
    from asgiref.sync import async_to_sync
    from django.contrib.auth.models import User
    from django.test import Client
    from django.utils import timezone

    from internal_config.models import Config
    from vm_manager.drivers.memory import InMemoryNodeDriver
    from vm_manager.models import Container, ContainerType, Node, ResourceQuota

    for name, value in {
        "openai_api_url": provider.url,
        "openai_api_key": provider.api_key,
        "openai_model": "fake-model",
    }.items():
        Config.objects.update_or_create(name=name, defaults={"value": value})
    user = User.objects.create_user("bench", password="bench-password")  # noqa: S106
    ResourceQuota.objects.filter(user=user).update(ai_use_per_day=100_000)
    node = Node.objects.create(
        name="bench-node",
        address="127.0.0.1",
        auth_token="bench-token",  # noqa: S106
        healthy=True,
        heartbeat_at=timezone.now(),
        capacity_vcpus=8,
        capacity_mem_mb=16384,
    )
    container = Container.objects.create(
        user=user,
        node=node,
        container_type=ContainerType.objects.get(container_type_name="small"),
        status=Container.Status.RUNNING,
    )
    driver = InMemoryNodeDriver.for_node(node)
    spec = {"vm_id": container.vm_id, "vcpus": 1, "memory_mb": 1024, "disk_gib": 5}
    async_to_sync(driver.vm_create)({**spec, "image": "default"})  # type: ignore[typeddict-item]
    async_to_sync(driver.vm_start)(container.vm_id)
    client = Client()
    client.force_login(user)
    return container.pk, client.cookies["sessionid"].value


def serve(port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """The web service in its own process, as a production worker."""
    command = [sys.executable, "-m", "uvicorn", "pequeroku.asgi:application"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    server = subprocess.Popen(command, cwd=REPO, env={**os.environ, **env})
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return server
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError("the web service did not start") from None
            time.sleep(0.05)


async def socket_turns(
    port: int, pk: int, session_id: str, provider: Any, count: int
) -> list[tuple[float, float]]:
    """(socket time to first text, provider time to first token) per turn, in seconds."""
    import websockets

    from ai_services.consumers import AIConsumer

    # The socket allows AIConsumer.rate_per_second frames on average (a burst beyond is refused
    # with "too many messages"): frames go out no faster than that, with a margin.
    gap = 1.25 / AIConsumer.rate_per_second
    last_sent = 0.0

    async def paced_send(ws: Any, text: str) -> None:
        nonlocal last_sent
        await asyncio.sleep(max(0.0, last_sent + gap - time.monotonic()))
        last_sent = time.monotonic()
        await ws.send(json.dumps({"text": text}))

    results: list[tuple[float, float]] = []
    async with websockets.connect(
        f"ws://127.0.0.1:{port}/ws/ai/{pk}/",
        origin="http://127.0.0.1",  # type: ignore[arg-type]
        additional_headers={"Cookie": f"sessionid={session_id}"},
    ) as ws:
        await _until(ws, "connected")
        for number in range(count):
            if number % 8 == 0:
                await paced_send(ws, "/clear")
                await _until(ws, "connected")
            requests_before = len(provider.requests)
            await asyncio.sleep(max(0.0, last_sent + gap - time.monotonic()))
            started = time.perf_counter()
            await paced_send(ws, f"question {number}")
            first_text = None
            while True:
                event = json.loads(await ws.recv())
                if event["event"] == "text" and first_text is None:
                    first_text = time.perf_counter() - started
                if event["event"] == "error":
                    raise SystemExit(f"turn {number}: the socket answered an error: {event}")
                if event["event"] == "connected":
                    break
            request = provider.requests[requests_before]
            results.append((first_text or 0.0, request.first_token_seconds or 0.0))
    return results


async def _until(ws: Any, name: str) -> None:
    while json.loads(await ws.recv())["event"] != name:
        pass


async def direct_turns(provider: Any, count: int) -> list[float]:
    """Client-side time to first token straight through the openai client."""
    from ai_services.utils import ProviderConfig, get_openai_client

    config = ProviderConfig(base_url=provider.url, model="fake-model", api_key=provider.api_key)
    timings = []
    for _ in range(count):
        client = get_openai_client(config)
        started = time.perf_counter()
        stream = await client.chat.completions.create(
            model="fake-model",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        first = None
        async for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - started
        await client.close()
        timings.append(first or 0.0)
    return timings


def describe(label: str, seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    p90 = ms[min(len(ms) - 1, int(len(ms) * 0.9))]
    return (
        f"{label:<44} median {statistics.median(ms):7.2f} ms   p90 {p90:7.2f} ms"
        f"   max {ms[-1]:7.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--first-token-ms", type=float, default=50.0)
    parser.add_argument(
        "--postgres",
        metavar="DSN",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help=f"server to create the throwaway database {BENCH_PG_DB} on",
    )
    parser.add_argument(
        "--redis",
        metavar="URL",
        default="redis://127.0.0.1:6379/0",
        help="the channel layer and cache, as in production (keys under a prefix of this run)",
    )
    args = parser.parse_args()

    env = bench_env(args.postgres, args.redis)
    setup_django(args.postgres, env)
    try:
        run(args, env)
    finally:
        drop_bench_database(args.postgres)


def drop_bench_database(dsn: str) -> None:
    import psycopg
    from django.db import connections

    connections.close_all()
    with psycopg.connect(dsn, dbname="postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{BENCH_PG_DB}" WITH (FORCE)')


def run(args: argparse.Namespace, env: dict[str, str]) -> None:
    from tests.ai.fake_provider import FakeProvider, TextReply

    provider = FakeProvider().start()
    provider.default_reply = TextReply(
        ["Hello", " from", " the", " fake", " model."],
        first_token_delay=args.first_token_ms / 1000,
    )
    pk, session_id = prepare(provider)
    port = free_port()
    server = serve(port, env)
    try:
        total = args.warmup + args.turns
        turns = asyncio.run(socket_turns(port, pk, session_id, provider, total))[args.warmup :]
        direct = asyncio.run(direct_turns(provider, total))[args.warmup :]
    finally:
        server.terminate()
        server.wait(timeout=10)
        provider.stop()

    socket_ttft = [t for t, _ in turns]
    provider_ttft = [p for _, p in turns]
    overhead = [t - p for t, p in turns]
    direct_overhead = [d - p for d, p in zip(direct, provider_ttft, strict=False)]
    print(
        f"{args.turns} turns (after {args.warmup} warm-up), provider first token after "
        f"{args.first_token_ms:.0f} ms; web service: Uvicorn process, PostgreSQL, "
        f"Redis channel layer and cache"
    )
    print(describe("socket: send -> first text event", socket_ttft))
    print(describe("provider's own time to first token", provider_ttft))
    print(describe("overhead (socket - provider), same turn", overhead))
    print(describe("openai client alone: request -> first token", direct))
    print(describe("  of which client + HTTP (client - provider)", direct_overhead))
    median_ms = statistics.median(overhead) * 1000
    verdict = "meets" if median_ms <= TARGET_MS else "MISSES"
    print(f"median overhead {median_ms:.2f} ms {verdict} the {TARGET_MS:.0f} ms target")


if __name__ == "__main__":
    main()
