"""The production shape on one machine, as compose runs it but without Docker.

    .venv/bin/python scripts/prod_shape.py [--workers 2] [--nodes 2] [--port 0]
        [--private-services] [--reconcile-interval 2] [--keep]

Starts, in order: (with ``--private-services``) a PostgreSQL cluster and a Redis server of its
own on free 127.0.0.1 ports; a dedicated database (``pequeroku_shape``, created, migrated,
dropped at the end); K node agents on the ``shell`` hypervisor (``node_agent.shell_hypervisor``:
a fake at the process boundary, real HTTP/WebSocket API, no QEMU), registered as nodes; the
reconcile loop (``manage.py reconcile --loop``); Gunicorn with N Uvicorn workers serving
``pequeroku.asgi`` with DEBUG=false, PostgreSQL through a connection pool per process (the
settings' ``DB_POOL_MAX_SIZE``) and the Redis channel layer, cache and revision store. Without
``--private-services`` it uses the machine's PostgreSQL (127.0.0.1:5432) and Redis
(127.0.0.1:6379, db 13) under a key prefix of its own, whose keys it deletes at the end; it
never stops or restarts the machine's services.

Ctrl-C (or SIGTERM) stops everything in order: reconciler, web, agents (their shells),
private services; then drops the database. Nothing is left running.

``Shape`` is also the library the load and fault benches use (``bench/load.py``,
``bench/faults.py``): start/stop, the pids to kill, restarts, RSS and DB connection counts.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
SHAPE_DB = "pequeroku_shape"


def say(message: str, *, err: bool = False) -> None:
    stream = sys.stderr if err else sys.stdout
    stream.write(f"prod_shape: {message}\n")
    stream.flush()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(check: object, timeout: float, what: str, interval: float = 0.1) -> float:
    """Poll ``check()`` until true; returns the seconds it took, raises after ``timeout``."""
    started = time.monotonic()
    while True:
        with contextlib.suppress(Exception):
            if check():  # type: ignore[operator]
                return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"prod_shape: {what} not ready after {timeout:.0f}s")
        time.sleep(interval)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 15.0) -> None:
    """SIGTERM, wait, then SIGKILL; the process's own session only (never a broad name)."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(part) for part in text.split()]


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def loopback_production_env(secret_key: str) -> dict[str, str]:
    """The production settings (``DEBUG=false``) for a server on 127.0.0.1 over plain HTTP
    (also ``bench/ai_stream.py``'s)."""
    return {
        "DJANGO_SETTINGS_MODULE": "pequeroku.settings",
        "DEBUG": "false",
        "SECRET_KEY": secret_key,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        # Plain HTTP on loopback: the TLS proxy of production is not part of it.
        "SECURE_SSL_REDIRECT": "false",
        "SESSION_COOKIE_SECURE": "false",
        "CSRF_COOKIE_SECURE": "false",
        "SECURE_HSTS_SECONDS": "0",
    }


@dataclass
class Agent:
    index: int
    port: int
    data_dir: Path
    token_file: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Shape:
    workers: int = 2
    nodes: int = 2
    port: int = 0
    private_services: bool = False
    reconcile_interval: float = 2.0
    db_conn_max_age: int | None = None  # DB_CONN_MAX_AGE for the web tier (settings' default)
    db_pool_max_size: int | None = None  # DB_POOL_MAX_SIZE per process (settings' default, 10)
    keep_logs: Path | None = None  # copy the logs here on stop
    keep_alive: int | None = None  # Gunicorn --keep-alive (entrypoint.sh leaves its default, 2 s)
    redis_url: str = "redis://127.0.0.1:6379/13"
    state_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="pq-shape-")))
    web: subprocess.Popen[bytes] | None = None
    reconciler: subprocess.Popen[bytes] | None = None
    agents: list[Agent] = field(default_factory=list)
    redis: subprocess.Popen[bytes] | None = None
    pg_data: Path | None = None
    redis_port: int = 0
    pg_port: int = 5432
    prefix: str = field(default_factory=lambda: f"pqshape-{secrets.token_hex(4)}:")
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    _started: bool = False

    # -- environment ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The production settings every Django process of the shape runs with."""
        return {
            **loopback_production_env(self.secret_key),
            "DB_NAME": SHAPE_DB,
            "DB_USER": "postgres",
            "DB_PASSWORD": "",
            "DB_HOST": "127.0.0.1",
            "DB_PORT": str(self.pg_port),
            **(
                {}
                if self.db_conn_max_age is None
                else {"DB_CONN_MAX_AGE": str(self.db_conn_max_age)}
            ),
            **(
                {}
                if self.db_pool_max_size is None
                else {"DB_POOL_MAX_SIZE": str(self.db_pool_max_size)}
            ),
            "REDIS_URL": self.redis_url,
            "REDIS_PREFIX": self.prefix,
            # The web workers' deferred audit rows: the shape's own, gone with it.
            "AUDIT_SPOOL_DIR": str(self.state_dir / "audit-spool"),
            # As behind the production reverse proxy: each simulated user has an address of its
            # own (the login and anonymous throttles are per address).
            "TRUSTED_PROXY_IP_HEADER": "HTTP_X_FORWARDED_FOR",
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        }

    def admin_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.pg_port}/postgres"

    def _spawn(
        self, args: list[str], log: Path, extra_env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with log.open("ab") as sink:
            return subprocess.Popen(  # noqa: S603 - our own fixed commands
                args,
                cwd=REPO,
                env={**os.environ, **self.env(), **(extra_env or {})},
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def _manage(self, *args: str) -> None:
        result = subprocess.run(  # noqa: S603 - our own fixed commands
            [PY, "manage.py", *args],
            cwd=REPO,
            env={**os.environ, **self.env()},
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:]
            raise RuntimeError(f"prod_shape: manage.py {args[0]} failed: {' '.join(tail)}")

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Shape:
        self._started = True
        (self.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        if self.private_services:
            self._start_private_postgres()
            self.redis_port = free_port()
            self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
            self.start_redis()
        self._create_database()
        self._manage("migrate", "--no-input")
        for index in range(self.nodes):
            self.agents.append(self._new_agent(index))
        for agent in self.agents:
            self.start_agent(agent)
            self._register(agent)
        self.start_reconciler()
        self.port = self.port or free_port()
        self.start_web()
        return self

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        stop_process(self.reconciler)
        stop_process(self.web, timeout=35)
        for agent in self.agents:
            stop_process(agent.proc)
        with contextlib.suppress(Exception):
            self._drop_database()
        if self.private_services:
            stop_process(self.redis)
            self._stop_private_postgres()
        else:
            with contextlib.suppress(Exception):
                self._delete_redis_keys()
        if self.keep_logs is not None:
            shutil.copytree(self.state_dir / "logs", self.keep_logs, dirs_exist_ok=True)
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self) -> Shape:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- web, reconciler, agents -----------------------------------------------------------------

    def start_web(self) -> None:
        log = self.state_dir / "logs" / "web.log"
        self.web = self._spawn(
            [
                PY, "-m", "gunicorn", "pequeroku.asgi:application",
                "--worker-class", "uvicorn_worker.UvicornWorker",
                "--workers", str(self.workers),
                "--bind", f"127.0.0.1:{self.port}",
                "--timeout", "60", "--graceful-timeout", "30",
                "--error-logfile", "-",
                *([] if self.keep_alive is None else ["--keep-alive", str(self.keep_alive)]),
            ],
            log,
        )  # fmt: skip
        wait_until(self.web_ready, 60, "the web service")

    def web_ready(self) -> bool:
        import httpx

        return (
            httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
            and len(self.web_worker_pids()) == self.workers
        )

    def web_worker_pids(self) -> list[int]:
        return children(self.web.pid) if self.web is not None else []

    def start_reconciler(self) -> None:
        log = self.state_dir / "logs" / "reconcile.log"
        interval = str(self.reconcile_interval)
        self.reconciler = self._spawn(
            [PY, "manage.py", "reconcile", "--loop", "--interval", interval], log
        )

    def _new_agent(self, index: int) -> Agent:
        data_dir = self.state_dir / f"node-{index}"
        data_dir.mkdir(mode=0o700)
        token_file = self.state_dir / f"node-{index}.token"
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32))
        log = self.state_dir / "logs" / f"node-{index}.log"
        return Agent(index, free_port(), data_dir, token_file, log)

    def start_agent(self, agent: Agent) -> None:
        agent.proc = self._spawn(
            [
                PY, "-m", "node_agent", "--hypervisor", "shell",
                "--listen", f"127.0.0.1:{agent.port}", "--data-dir", str(agent.data_dir),
                "--token-file", str(agent.token_file), "--log-level", "warning",
            ],
            agent.log,
            # The fake isolates nothing; this lets placement use it for the run (see its module).
            {"PEQUEROKU_SHELL_LOAD_RUN": "1"},
        )  # fmt: skip
        wait_until(lambda: port_open(agent.port), 30, f"node agent {agent.index}")

    def _register(self, agent: Agent) -> None:
        self._manage(
            "register_node", f"shape-node-{agent.index}", "--url", agent.url,
            "--token-file", str(agent.token_file),
        )  # fmt: skip

    def server_pids(self) -> dict[str, list[int]]:
        pids: dict[str, list[int]] = {"web": [], "reconciler": [], "agents": []}
        if self.web is not None and self.web.poll() is None:
            pids["web"] = [self.web.pid, *self.web_worker_pids()]
        if self.reconciler is not None and self.reconciler.poll() is None:
            pids["reconciler"] = [self.reconciler.pid]
        pids["agents"] = [a.proc.pid for a in self.agents if a.proc and a.proc.poll() is None]
        return pids

    def rss_mb(self) -> dict[str, float]:
        """Resident memory of the web tier (master + workers), the reconciler and the agents."""
        return {
            role: sum(rss_kb(pid) for pid in pids) / 1024
            for role, pids in self.server_pids().items()
        }

    def db_connections(self) -> int:
        import psycopg

        with psycopg.connect(self.admin_dsn(), autocommit=True, connect_timeout=5) as admin:
            row = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (SHAPE_DB,)
            ).fetchone()
        return int(row[0]) if row else 0

    # -- databases -----------------------------------------------------------------------------

    def _create_database(self) -> None:
        import psycopg

        with psycopg.connect(self.admin_dsn(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{SHAPE_DB}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{SHAPE_DB}"')

    def _drop_database(self) -> None:
        import psycopg

        with psycopg.connect(self.admin_dsn(), autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{SHAPE_DB}" WITH (FORCE)')

    def _delete_redis_keys(self) -> None:
        import redis

        client = redis.Redis.from_url(self.redis_url)
        for key in client.scan_iter(match=f"{self.prefix}*", count=1000):
            client.delete(key)
        client.close()

    # -- private PostgreSQL and Redis (for faults: the machine's services are never touched) -----

    def _as_postgres(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = list(args)
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603

    def _start_private_postgres(self) -> None:
        if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
            raise RuntimeError("prod_shape: --private-services needs initdb and pg_ctl")
        self.pg_port = free_port()
        self.pg_data = Path(tempfile.mkdtemp(prefix="pq-shape-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.pg_data, "postgres", "postgres")
        result = self._as_postgres(
            "initdb", "-D", str(self.pg_data), "-A", "trust", "-U", "postgres", "--no-sync"
        )
        if result.returncode != 0:
            raise RuntimeError(f"prod_shape: initdb failed: {result.stderr.strip()[-300:]}")
        self.start_postgres()

    def start_postgres(self) -> None:
        assert self.pg_data is not None  # noqa: S101
        options = (
            f"-p {self.pg_port} -k {self.pg_data} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c max_connections=300"
        )
        result = self._as_postgres(
            "pg_ctl", "-D", str(self.pg_data), "-o", options,
            "-l", str(self.pg_data / "server.log"), "-w", "start",
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"prod_shape: pg_ctl start failed: {result.stderr.strip()[-300:]}")

    def stop_postgres(self, mode: str = "fast") -> None:
        if self.pg_data is not None:
            self._as_postgres("pg_ctl", "-D", str(self.pg_data), "-m", mode, "-w", "stop")

    def _stop_private_postgres(self) -> None:
        self.stop_postgres("immediate")
        if self.pg_data is not None:
            shutil.rmtree(self.pg_data, ignore_errors=True)

    def start_redis(self) -> None:
        redis_dir = self.state_dir / "redis"
        redis_dir.mkdir(exist_ok=True)
        self.redis = self._spawn(
            [
                "redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
                "--dir", str(redis_dir), "--save", "60 1",
            ],
            self.state_dir / "logs" / "redis.log",
        )  # fmt: skip
        wait_until(lambda: port_open(self.redis_port), 20, "redis")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="Uvicorn workers under Gunicorn")
    parser.add_argument("--nodes", type=int, default=2, help="node agents (shell hypervisor)")
    parser.add_argument("--port", type=int, default=0, help="web port (default: a free one)")
    parser.add_argument("--reconcile-interval", type=float, default=2.0)
    parser.add_argument(
        "--private-services",
        action="store_true",
        help="own PostgreSQL and Redis on free ports (what bench/faults.py restarts)",
    )
    args = parser.parse_args()
    if args.workers < 1 or args.nodes < 1:
        parser.error("--workers and --nodes must be at least 1")
    shape = Shape(
        workers=args.workers,
        nodes=args.nodes,
        port=args.port,
        private_services=args.private_services,
        reconcile_interval=args.reconcile_interval,
    )
    stop = False

    def request_stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        shape.start()
        say(f"web {shape.url} ({shape.workers} workers), {shape.nodes} node agents")
        say(f"database {SHAPE_DB} on port {shape.pg_port}, redis {shape.redis_url}")
        say(f"logs in {shape.state_dir / 'logs'}; Ctrl-C stops everything")
        while not stop:
            time.sleep(0.5)
            dead = [role for role, pids in shape.server_pids().items() if not pids]
            if dead:
                say(f"{', '.join(dead)} exited; stopping", err=True)
                break
    except RuntimeError as exc:
        say(str(exc), err=True)
        sys.exit(1)
    finally:
        shape.stop()
        say("stopped")


if __name__ == "__main__":
    main()
