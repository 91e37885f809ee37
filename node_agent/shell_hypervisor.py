"""The ``shell`` hypervisor: a FAKE backend for load and fault runs, never for production.

It is a fake at a process boundary speaking the real protocol: ``python -m node_agent
--hypervisor shell`` serves the same HTTP and WebSocket API as the QEMU agent (same routes,
bodies, bearer token, error codes; ``tests/node_agent/test_shell_hypervisor.py`` checks the
route table against ``node_agent.app``), but a VM is only a record on disk
(``<data-dir>/shell-vms/<vm_id>/vm.json``) and a folder standing in for its ``/app``
(``.../app``). Commands, file operations and terminals run on the host, as the agent's user,
in that folder: a terminal is a real ``bash`` on a PTY, ``exec`` a real ``bash -c``. No
isolation of any kind, no resource limits, no guest: so that hundreds of "VMs" fit on a small
machine behind real agent processes that can be killed and restarted. QEMU
(``node_agent.app``) stays the default and the only backend for production.

Like QEMU VMs, the records outlive the agent: a restarted agent lists every VM it had, in the
power state it had (its terminals and commands died with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import platform
import pty
import re
import shutil
import signal
import struct
import tarfile
import termios
import time
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from fcntl import ioctl
from pathlib import Path
from typing import Literal

from fastapi import Body, FastAPI, Query, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.websockets import WebSocketDisconnect

from .app import ERRORS, BearerAuth, _clamp, _error_response, _summarise
from .config import AgentConfig
from .errors import (
    AgentError,
    ArchiveTooLargeError,
    BadRequestError,
    GuestFileNotFoundError,
    PathNotAllowedError,
    VMNotFoundError,
    VMNotRunningError,
)
from .paths import WORKSPACE_ROOT, workspace_path
from .schemas import (
    ExecIn,
    ExecOut,
    FileEntryOut,
    MoveIn,
    NodeHealthOut,
    PathIn,
    VMSpecIn,
    VMStatsOut,
    VMStatusOut,
)

log = logging.getLogger("node_agent.shell")

# What the fake node claims to hold: room for hundreds of small containers on any machine.
# A VM's disk is a number in its record here, not a file, so the disk it claims is as fake as
# the rest (the real free space is still reported, for NODE_MIN_FREE_DISK_MB).
CAPACITY_VCPUS = 4096
CAPACITY_MEM_MB = 4 * 1024 * 1024
CAPACITY_DISK_MB = 64 * 1024 * 1024
MAX_OUTPUT_BYTES = 256 * 1024
# Placement gives no container to a node without guest isolation, and this fake has none. The
# production shape's load runs (scripts/prod_shape.py, 127.0.0.1 only) set this variable so that
# it is placed on anyway; its health still says, in isolation_detail, that nothing is isolated.
LOAD_RUN_ISOLATION_ENV = "PEQUEROKU_SHELL_LOAD_RUN"
VM_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # as node_agent.vms


@dataclass
class ShellRecord:
    vm_id: str
    vcpus: int
    memory_mb: int
    disk_gib: int
    image: str
    running: bool = False
    suspended: bool = False
    last_boot: str = ""
    created_at: float = field(default_factory=time.time)

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(path)


class ShellVM:
    def __init__(self, record: ShellRecord, root: Path) -> None:
        self.record, self.root = record, root
        self.workspace = root / "app"
        self.lock = asyncio.Lock()
        self.processes: set[asyncio.subprocess.Process] = set()

    def save(self) -> None:
        self.record.save(self.root / "vm.json")

    def status(self) -> dict[str, object]:
        running = self.record.running
        return {
            "vm_id": self.record.vm_id,
            "state": "running" if running else "stopped",
            "vcpus": self.record.vcpus,
            "memory_mb": self.record.memory_mb,
            "disk_gib": self.record.disk_gib,
            "ssh_ready": running,
            "detail": "",
            "suspended": self.record.suspended,
            "last_boot": self.record.last_boot,
        }

    def host_path(self, path: str) -> Path:
        """The host path of a guest path, refused when it (or a symlink in it) leaves /app."""
        guest = workspace_path(path)
        relative = guest[len(WORKSPACE_ROOT) :].lstrip("/")
        candidate = self.workspace / relative
        root = os.path.realpath(self.workspace)
        resolved = os.path.realpath(candidate)
        if resolved != root and not resolved.startswith(root + os.sep):
            raise PathNotAllowedError(f"path {path!r} resolves outside /app")
        return candidate

    def guest_path(self, host: Path) -> str:
        relative = host.relative_to(self.workspace).as_posix()
        return WORKSPACE_ROOT if relative == "." else f"{WORKSPACE_ROOT}/{relative}"

    async def kill_processes(self) -> None:
        for proc in list(self.processes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        for proc in list(self.processes):
            with contextlib.suppress(ProcessLookupError):
                await proc.wait()
        self.processes.clear()


class ShellVMManager:
    """The same operations as ``node_agent.vms.VMManager``, on records and folders."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.vms_dir = config.data_dir / "shell-vms"
        self.vms_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.vms: dict[str, ShellVM] = {}

    async def startup(self) -> None:
        for path in sorted(self.vms_dir.glob("*/vm.json")):
            try:
                data = json.loads(path.read_text())
                record = ShellRecord(
                    **{k: data[k] for k in ShellRecord.__dataclass_fields__ if k in data}
                )
            except (OSError, ValueError, TypeError) as exc:
                log.warning("skipping unreadable %s: %s", path, exc)
                continue
            self.vms[record.vm_id] = ShellVM(record, path.parent)
        log.info("shell hypervisor (a fake, no QEMU): %d VMs on record", len(self.vms))

    async def shutdown(self) -> None:
        for vm in self.vms.values():
            await vm.kill_processes()

    async def health(self) -> dict[str, object]:
        running = [vm for vm in self.vms.values() if vm.record.running]
        usage = os.statvfs(self.config.data_dir)
        return {
            "arch": platform.machine(),
            "kvm_available": False,
            "accel": "shell",
            "capacity_vcpus": CAPACITY_VCPUS,
            "capacity_mem_mb": CAPACITY_MEM_MB,
            "used_vcpus": sum(vm.record.vcpus for vm in running),
            "used_mem_mb": sum(vm.record.memory_mb for vm in running),
            "running_vms": len(running),
            "capacity_disk_mb": CAPACITY_DISK_MB,
            "free_disk_mb": usage.f_bavail * usage.f_frsize // 2**20,
            "guest_isolation": os.environ.get(LOAD_RUN_ISOLATION_ENV) == "1",
            "guest_egress": self.config.guest_egress,
            "isolation_detail": "shell hypervisor: a fake without guests or isolation",
        }

    def get(self, vm_id: str) -> ShellVM:
        try:
            return self.vms[vm_id]
        except KeyError:
            raise VMNotFoundError(f"no VM {vm_id}") from None

    def running(self, vm_id: str) -> ShellVM:
        vm = self.get(vm_id)
        if not vm.record.running:
            raise VMNotRunningError(f"VM {vm_id} is stopped")
        return vm

    async def create(self, spec: dict[str, object]) -> dict[str, object]:
        vm_id = str(spec["vm_id"])
        if not VM_ID_RE.match(vm_id):
            raise BadRequestError("vm_id must be 1-64 letters, digits, '.', '_' or '-'")
        if vm_id in self.vms:
            return self.vms[vm_id].status()
        root = self.vms_dir / vm_id
        (root / "app").mkdir(parents=True, exist_ok=True)
        record = ShellRecord(
            vm_id=vm_id,
            vcpus=int(spec["vcpus"]),  # type: ignore[call-overload]
            memory_mb=int(spec["memory_mb"]),  # type: ignore[call-overload]
            disk_gib=int(spec["disk_gib"]),  # type: ignore[call-overload]
            image=str(spec["image"]),
        )
        vm = self.vms[vm_id] = ShellVM(record, root)
        vm.save()
        return vm.status()

    async def start(self, vm_id: str) -> dict[str, object]:
        vm = self.get(vm_id)
        async with vm.lock:
            if not vm.record.running:
                vm.record.last_boot = "restored" if vm.record.suspended else "cold"
            vm.record.running, vm.record.suspended = True, False
            vm.save()
            return vm.status()

    async def stop(self, vm_id: str) -> dict[str, object]:
        vm = self.get(vm_id)
        async with vm.lock:
            await vm.kill_processes()
            vm.record.running = vm.record.suspended = False
            vm.save()
            return vm.status()

    async def suspend(self, vm_id: str) -> dict[str, object]:
        """Like QEMU's suspend, the files stay and the next start says "restored"; the shells,
        which a record cannot freeze, end as in a stop."""
        vm = self.get(vm_id)
        async with vm.lock:
            await vm.kill_processes()
            if vm.record.running:
                vm.record.running, vm.record.suspended = False, True
            vm.save()
            return vm.status()

    async def delete(self, vm_id: str) -> None:
        vm = self.vms.get(vm_id)
        if vm is None:
            return
        async with vm.lock:
            await vm.kill_processes()
            shutil.rmtree(vm.root, ignore_errors=True)
            self.vms.pop(vm_id, None)

    async def stats(self, vm_id: str) -> dict[str, object]:
        vm = self.running(vm_id)
        rss = vm.record.memory_mb * 2**20 // 8
        return {
            "ts": time.time(),
            "cpu_percent": 0.0,
            "rss_bytes": rss,
            "rss_mib": rss / 2**20,
            "num_threads": 1 + len(vm.processes),
            "io": {"read_bytes": 0, "write_bytes": 0},
        }

    async def spawn(self, vm: ShellVM, *argv: str, **kwargs: object) -> asyncio.subprocess.Process:
        """A process of ``vm``, in its own session (so a stop kills its whole group)."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(vm.workspace)}
        env["TERM"] = "xterm-256color"
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=vm.workspace, env=env, **kwargs  # type: ignore[arg-type]
        )  # fmt: skip
        vm.processes.add(proc)
        return proc

    async def exec(self, vm_id: str, cmd: str, timeout: float) -> dict[str, object]:
        vm = self.running(vm_id)
        pipe = asyncio.subprocess.PIPE
        proc = await self.spawn(
            vm, "bash", "-c", cmd, stdin=asyncio.subprocess.DEVNULL, stdout=pipe, stderr=pipe,
            start_new_session=True,
        )  # fmt: skip
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            return {"exit_code": 124, "stdout": "", "stderr": "timed out", "timed_out": True}
        finally:
            vm.processes.discard(proc)
        return {
            "exit_code": proc.returncode if proc.returncode is not None else -1,
            "stdout": stdout[:MAX_OUTPUT_BYTES].decode(errors="replace"),
            "stderr": stderr[:MAX_OUTPUT_BYTES].decode(errors="replace"),
            "timed_out": False,
        }


# -- file operations: the semantics of node_agent.guest's scripts, on the host -------------------

_KINDS = (("symlink", Path.is_symlink), ("directory", Path.is_dir), ("file", Path.is_file))


def list_dir(vm: ShellVM, path: str) -> list[dict[str, object]]:
    host = vm.host_path(path)
    if not host.is_dir():
        raise GuestFileNotFoundError(f"{path} does not exist")
    entries = []
    for child in host.iterdir():
        st = child.lstat()
        kind = next((name for name, test in _KINDS if test(child)), "other")
        entries.append(
            {
                "path": f"{workspace_path(path).rstrip('/')}/{child.name}",
                "name": child.name,
                "path_type": kind,
                "size": st.st_size,
                "mode": st.st_mode & 0o7777,
            }
        )
    return sorted(entries, key=lambda entry: str(entry["name"]))


def read_file(vm: ShellVM, path: str) -> bytes:
    host = vm.host_path(path)
    if not host.is_file():
        raise GuestFileNotFoundError(f"{path} does not exist")
    return host.read_bytes()


def write_file(vm: ShellVM, path: str, content: bytes, mode: int | None) -> None:
    host = vm.host_path(path)
    if host.is_dir():
        raise BadRequestError("is a directory")
    host.parent.mkdir(parents=True, exist_ok=True)
    tmp = host.with_name(f".{host.name}.pq-tmp")
    tmp.write_bytes(content)
    if mode is not None:
        tmp.chmod(mode)
    tmp.replace(host)


def make_dir(vm: ShellVM, path: str) -> None:
    vm.host_path(path).mkdir(parents=True, exist_ok=True)


def move_path(vm: ShellVM, src: str, dst: str) -> None:
    source, target = vm.host_path(src), vm.host_path(dst)
    if source == vm.workspace:
        raise PathNotAllowedError(f"path {src!r} is /app itself")
    if not (source.exists() or source.is_symlink()):
        raise GuestFileNotFoundError(f"{src} does not exist")
    target.parent.mkdir(parents=True, exist_ok=True)
    source.rename(target)


def delete_path(vm: ShellVM, path: str) -> None:
    host = vm.host_path(path)
    if host == vm.workspace:
        raise PathNotAllowedError("refusing to delete /app")
    if host.is_dir() and not host.is_symlink():
        shutil.rmtree(host)
    elif host.exists() or host.is_symlink():
        host.unlink()
    else:
        raise GuestFileNotFoundError(f"{path} does not exist")


def archive_bytes(vm: ShellVM, root: str, fmt: str, limit: int) -> bytes:
    host = vm.host_path(root)
    if not host.is_dir():
        raise GuestFileNotFoundError(f"{root} does not exist")
    files = [p for p in host.rglob("*") if p.is_file() and not p.is_symlink()]
    if sum(p.stat().st_size for p in files) > limit:
        raise ArchiveTooLargeError(f"{root} holds more than {limit // 2**20} MiB")
    buffer = io.BytesIO()
    if fmt == "zip":
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in sorted(files):
                archive.write(file, file.relative_to(host).as_posix())
    else:
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            archive.add(host, arcname=".")
    return buffer.getvalue()


# -- terminals ----------------------------------------------------------------------------------


async def _open_pty(
    manager: ShellVMManager, vm: ShellVM, cols: int, rows: int
) -> tuple[int, asyncio.subprocess.Process]:
    """A real ``bash -i`` whose controlling terminal is a new PTY (``setsid -c``: no fork here)."""
    master, slave = pty.openpty()
    ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    try:
        proc = await manager.spawn(
            vm, "setsid", "-c", "bash", "--noprofile", "--norc", "-i",
            stdin=slave, stdout=slave, stderr=slave,
        )  # fmt: skip
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    os.set_blocking(master, False)
    return master, proc


async def _bridge(
    websocket: WebSocket, vm: ShellVM, master: int, proc: asyncio.subprocess.Process
) -> None:
    loop = asyncio.get_running_loop()
    output: asyncio.Queue[bytes] = asyncio.Queue()

    def readable() -> None:
        try:
            data = os.read(master, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(master)
        output.put_nowait(data)

    loop.add_reader(master, readable)

    async def shell_to_client() -> None:
        while chunk := await output.get():
            await websocket.send_bytes(chunk)

    async def client_to_shell() -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes"):
                os.write(master, message["bytes"])
            elif message.get("text"):
                _apply_control(master, message["text"])

    tasks = [asyncio.create_task(shell_to_client()), asyncio.create_task(client_to_shell())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        loop.remove_reader(master)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        vm.processes.discard(proc)
        os.close(master)
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await websocket.close()


def _apply_control(master: int, text: str) -> None:
    try:
        message = json.loads(text)
        if message.get("type") == "resize":
            size = struct.pack("HHHH", _clamp(message["rows"]), _clamp(message["cols"]), 0, 0)
            ioctl(master, termios.TIOCSWINSZ, size)
    except (ValueError, KeyError, TypeError, AttributeError):
        log.debug("ignoring a malformed terminal control frame")


# -- the app: node_agent.app's routes, over ShellVMManager ---------------------------------------


def create_app(config: AgentConfig) -> FastAPI:
    manager = ShellVMManager(config)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await manager.startup()
        yield
        await manager.shutdown()

    app = FastAPI(
        title="Pequeroku node agent (shell hypervisor: a fake)",
        version="1",
        lifespan=lifespan,
        responses=ERRORS,
    )
    app.state.manager = manager

    @app.exception_handler(AgentError)
    async def agent_error(_: Request, exc: AgentError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error_response(BadRequestError(_summarise(exc)))

    _add_vm_routes(app, manager)
    _add_file_routes(app, manager)
    _add_terminal_route(app, manager)
    app.add_middleware(BearerAuth, token=config.token)
    return app


def _add_vm_routes(app: FastAPI, manager: ShellVMManager) -> None:
    @app.get("/health", response_model=NodeHealthOut)
    async def health() -> dict[str, object]:
        return await manager.health()

    @app.get("/vms", response_model=list[VMStatusOut])
    async def vm_list() -> list[dict[str, object]]:
        return [vm.status() for vm in manager.vms.values()]

    @app.post("/vms", response_model=VMStatusOut)
    async def vm_create(spec: VMSpecIn) -> dict[str, object]:
        return await manager.create(spec.model_dump())

    @app.get("/vms/{vm_id}", response_model=VMStatusOut)
    async def vm_status(vm_id: str) -> dict[str, object]:
        return manager.get(vm_id).status()

    @app.delete("/vms/{vm_id}", status_code=204)
    async def vm_delete(vm_id: str) -> Response:
        await manager.delete(vm_id)
        return Response(status_code=204)

    @app.post("/vms/{vm_id}/start", response_model=VMStatusOut)
    async def vm_start(vm_id: str) -> dict[str, object]:
        return await manager.start(vm_id)

    @app.post("/vms/{vm_id}/stop", response_model=VMStatusOut)
    async def vm_stop(vm_id: str, timeout: float = Query(30.0, ge=0, le=600)) -> dict[str, object]:
        return await manager.stop(vm_id)

    @app.post("/vms/{vm_id}/suspend", response_model=VMStatusOut)
    async def vm_suspend(vm_id: str) -> dict[str, object]:
        return await manager.suspend(vm_id)

    @app.get("/vms/{vm_id}/stats", response_model=VMStatsOut)
    async def vm_stats(vm_id: str) -> dict[str, object]:
        return await manager.stats(vm_id)

    @app.post("/vms/{vm_id}/exec", response_model=ExecOut)
    async def vm_exec(vm_id: str, body: ExecIn) -> dict[str, object]:
        return await manager.exec(vm_id, body.cmd, body.timeout)


def _add_file_routes(app: FastAPI, manager: ShellVMManager) -> None:
    @app.get("/vms/{vm_id}/files", response_model=list[FileEntryOut])
    async def files_list(vm_id: str, path: str = "/app") -> list[dict[str, object]]:
        return list_dir(manager.running(vm_id), path)

    @app.delete("/vms/{vm_id}/files", status_code=204)
    async def files_delete(vm_id: str, path: str) -> Response:
        delete_path(manager.running(vm_id), path)
        return Response(status_code=204)

    @app.get("/vms/{vm_id}/files/content", response_class=Response)
    async def files_read(vm_id: str, path: str) -> Response:
        data = read_file(manager.running(vm_id), path)
        return Response(data, media_type="application/octet-stream")

    @app.put("/vms/{vm_id}/files/content", status_code=204)
    async def files_write(
        vm_id: str,
        path: str,
        content: bytes = Body(b"", media_type="application/octet-stream"),
        mode: int | None = Query(None, ge=0, le=0o7777),
    ) -> Response:
        write_file(manager.running(vm_id), path, content, mode)
        return Response(status_code=204)

    @app.post("/vms/{vm_id}/files/mkdir", status_code=204)
    async def files_mkdir(vm_id: str, body: PathIn) -> Response:
        make_dir(manager.running(vm_id), body.path)
        return Response(status_code=204)

    @app.post("/vms/{vm_id}/files/move", status_code=204)
    async def files_move(vm_id: str, body: MoveIn) -> Response:
        move_path(manager.running(vm_id), body.src, body.dst)
        return Response(status_code=204)

    @app.get("/vms/{vm_id}/archive", response_class=StreamingResponse)
    async def files_archive(
        vm_id: str, root: str = "/app", fmt: Literal["zip", "tar.gz"] = "tar.gz"
    ) -> StreamingResponse:
        vm = manager.running(vm_id)
        data = archive_bytes(vm, root, fmt, manager.config.max_archive_bytes)
        media_type = "application/zip" if fmt == "zip" else "application/gzip"
        chunks = (data[i : i + 65536] for i in range(0, len(data), 65536))
        return StreamingResponse(chunks, media_type=media_type)


def _add_terminal_route(app: FastAPI, manager: ShellVMManager) -> None:
    @app.websocket("/vms/{vm_id}/terminal")
    async def terminal(websocket: WebSocket, vm_id: str, cols: int = 80, rows: int = 24) -> None:
        try:
            vm = manager.running(vm_id)
            master, proc = await _open_pty(manager, vm, _clamp(cols), _clamp(rows))
        except AgentError as exc:
            await websocket.send_denial_response(_error_response(exc))
            return
        await websocket.accept()
        await _bridge(websocket, vm, master, proc)
