"""An in-memory node for tests: same semantics as the node agent, no VMs.

State is process-global and keyed by node name, so every driver instance for one node sees the
same VMs (as every worker sees the same agent). Each VM's workspace is a real temporary
directory standing in for the guest's ``/app``: ``exec`` and terminals run a real shell in it,
so a file written by a command is visible to ``read_file`` and the other way round.

Test hooks: ``InMemoryNodeDriver.reset()``, ``set_reachable(name, bool)``,
``set_capacity(name, vcpus=, mem_mb=)``, ``set_disk(name, capacity_mb=, free_mb=)``,
``set_guest_isolation(name, bool)``, ``crash_vm(name, vm_id)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import os
import pty
import shutil
import signal
import struct
import tarfile
import tempfile
import termios
import time
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from fcntl import ioctl
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from vm_manager.guest.paths import relative_to_workspace

from .base import (
    WORKSPACE_ROOT,
    ArchiveFormat,
    ExecResult,
    FileEntry,
    GuestFileNotFound,
    GuestFileTooLarge,
    NodeBadRequest,
    NodeHealth,
    NodeUnavailable,
    PathNotAllowed,
    VMNotFound,
    VMNotRunning,
    VMSpec,
    VMStats,
    VMStatus,
)

if TYPE_CHECKING:
    from vm_manager.models import Node

MAX_OUTPUT_BYTES = 256 * 1024


@dataclass
class _FakeVM:
    spec: VMSpec
    workspace: Path
    state: str = "stopped"
    detail: str = ""
    suspended: bool = False
    last_boot: str = ""

    def status(self) -> VMStatus:
        return VMStatus(
            vm_id=self.spec["vm_id"],
            state=self.state,  # type: ignore[typeddict-item]
            vcpus=self.spec["vcpus"],
            memory_mb=self.spec["memory_mb"],
            disk_gib=self.spec["disk_gib"],
            ssh_ready=self.state == "running",
            detail=self.detail,
            suspended=self.suspended,
            last_boot=self.last_boot,  # type: ignore[typeddict-item]
            boot_detail="",
        )


@dataclass
class _FakeNode:
    name: str
    reachable: bool = True
    arch: str = "x86_64"
    kvm_available: bool = False
    capacity_vcpus: int = 8
    capacity_mem_mb: int = 16384
    capacity_disk_mb: int = 262144
    free_disk_mb: int = 262144
    guest_isolation: bool = True
    suspend_supported: bool = True
    vms: dict[str, _FakeVM] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)


class InMemoryNodeDriver:
    _nodes: ClassVar[dict[str, _FakeNode]] = {}

    def __init__(self, node_name: str) -> None:
        self.node_name = node_name

    @classmethod
    def for_node(cls, node: Node) -> InMemoryNodeDriver:
        return cls(node.name)

    # -- test hooks -------------------------------------------------------------------------

    @classmethod
    def reset(cls) -> None:
        for node in cls._nodes.values():
            for vm in node.vms.values():
                shutil.rmtree(vm.workspace, ignore_errors=True)
        cls._nodes.clear()

    @classmethod
    def node_state(cls, name: str) -> _FakeNode:
        return cls._nodes.setdefault(name, _FakeNode(name=name))

    @classmethod
    def set_reachable(cls, name: str, reachable: bool) -> None:
        cls.node_state(name).reachable = reachable

    @classmethod
    def set_capacity(cls, name: str, *, vcpus: int, mem_mb: int) -> None:
        node = cls.node_state(name)
        node.capacity_vcpus, node.capacity_mem_mb = vcpus, mem_mb

    @classmethod
    def set_disk(cls, name: str, *, capacity_mb: int, free_mb: int) -> None:
        node = cls.node_state(name)
        node.capacity_disk_mb, node.free_disk_mb = capacity_mb, free_mb

    @classmethod
    def set_guest_isolation(cls, name: str, enforced: bool) -> None:
        cls.node_state(name).guest_isolation = enforced

    @classmethod
    def set_suspend_supported(cls, name: str, supported: bool) -> None:
        """An agent without suspend: ``vm_suspend`` is refused as an older agent refuses it."""
        cls.node_state(name).suspend_supported = supported

    @classmethod
    def crash_vm(cls, name: str, vm_id: str) -> None:
        vm = cls.node_state(name).vms[vm_id]
        vm.state, vm.detail = "error", "qemu process exited unexpectedly"

    # -- internals --------------------------------------------------------------------------

    def _node(self, op: str, vm_id: str = "") -> _FakeNode:
        node = self.node_state(self.node_name)
        if not node.reachable:
            raise NodeUnavailable(f"node {self.node_name} is unreachable")
        node.calls.append((op, vm_id))
        return node

    def _vm(self, op: str, vm_id: str) -> _FakeVM:
        node = self._node(op, vm_id)
        try:
            return node.vms[vm_id]
        except KeyError:
            raise VMNotFound(f"no VM {vm_id} on {self.node_name}") from None

    def _running_vm(self, op: str, vm_id: str) -> _FakeVM:
        vm = self._vm(op, vm_id)
        if vm.state != "running":
            raise VMNotRunning(f"VM {vm_id} is {vm.state}")
        return vm

    @staticmethod
    def _host_path(vm: _FakeVM, path: str) -> Path:
        relative = relative_to_workspace(path)
        candidate = vm.workspace / relative
        resolved = candidate.resolve()
        root = vm.workspace.resolve()
        if resolved != root and root not in resolved.parents:
            raise PathNotAllowed(f"path {path!r} resolves outside {WORKSPACE_ROOT}")
        return candidate

    @staticmethod
    def _guest_path(vm: _FakeVM, host: Path) -> str:
        relative = host.relative_to(vm.workspace).as_posix()
        return WORKSPACE_ROOT if relative == "." else f"{WORKSPACE_ROOT}/{relative}"

    # -- NodeDriver -------------------------------------------------------------------------

    async def health(self) -> NodeHealth:
        node = self._node("health")
        running = [vm for vm in node.vms.values() if vm.state == "running"]
        return NodeHealth(
            arch=node.arch,
            kvm_available=node.kvm_available,
            accel="kvm" if node.kvm_available else "tcg",
            capacity_vcpus=node.capacity_vcpus,
            capacity_mem_mb=node.capacity_mem_mb,
            used_vcpus=sum(vm.spec["vcpus"] for vm in running),
            used_mem_mb=sum(vm.spec["memory_mb"] for vm in running),
            running_vms=len(running),
            capacity_disk_mb=node.capacity_disk_mb,
            free_disk_mb=node.free_disk_mb,
            guest_isolation=node.guest_isolation,
            guest_egress="public",
            isolation_detail="" if node.guest_isolation else "policy not in force (fake)",
            golden_snapshots={},
        )

    async def vm_create(self, spec: VMSpec) -> VMStatus:
        node = self._node("vm_create", spec["vm_id"])
        vm = node.vms.get(spec["vm_id"])
        if vm is None:
            workspace = Path(tempfile.mkdtemp(prefix=f"pequeroku-{spec['vm_id']}-"))
            vm = node.vms[spec["vm_id"]] = _FakeVM(spec=dict(spec), workspace=workspace)  # type: ignore[arg-type]
        return vm.status()

    async def vm_start(self, vm_id: str) -> VMStatus:
        vm = self._vm("vm_start", vm_id)
        if vm.state != "running":
            vm.last_boot = "restored" if vm.suspended else "cold"
        vm.state, vm.detail, vm.suspended = "running", "", False
        return vm.status()

    async def vm_stop(self, vm_id: str, timeout: float = 30.0) -> VMStatus:
        vm = self._vm("vm_stop", vm_id)
        vm.state, vm.detail, vm.suspended = "stopped", "", False
        return vm.status()

    async def vm_suspend(self, vm_id: str) -> VMStatus:
        vm = self._vm("vm_suspend", vm_id)
        if not self.node_state(self.node_name).suspend_supported:
            raise NodeBadRequest(f"node {self.node_name} cannot suspend VMs")
        if vm.state == "running":
            vm.state, vm.detail, vm.suspended = "stopped", "", True
        return vm.status()

    async def vm_delete(self, vm_id: str) -> None:
        node = self._node("vm_delete", vm_id)
        vm = node.vms.pop(vm_id, None)
        if vm is not None:
            shutil.rmtree(vm.workspace, ignore_errors=True)

    async def vm_status(self, vm_id: str) -> VMStatus:
        return self._vm("vm_status", vm_id).status()

    async def vm_list(self) -> list[VMStatus]:
        return [vm.status() for vm in self._node("vm_list").vms.values()]

    async def vm_stats(self, vm_id: str) -> VMStats:
        vm = self._running_vm("vm_stats", vm_id)
        rss = vm.spec["memory_mb"] * 1024 * 1024 // 4
        return VMStats(
            ts=time.time(),
            cpu_percent=0.0,
            rss_bytes=rss,
            rss_mib=rss / (1024 * 1024),
            num_threads=vm.spec["vcpus"] + 2,
            io={"read_bytes": 0, "write_bytes": 0},
        )

    async def exec(self, vm_id: str, cmd: str, timeout: float = 30.0) -> ExecResult:
        vm = self._running_vm("exec", vm_id)
        proc = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            cmd,
            cwd=vm.workspace,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            return ExecResult(exit_code=124, stdout="", stderr="timed out", timed_out=True)
        return ExecResult(
            exit_code=proc.returncode if proc.returncode is not None else -1,
            stdout=stdout[:MAX_OUTPUT_BYTES].decode(errors="replace"),
            stderr=stderr[:MAX_OUTPUT_BYTES].decode(errors="replace"),
            timed_out=False,
        )

    async def list_dir(self, vm_id: str, path: str, limit: int | None = None) -> list[FileEntry]:
        vm = self._running_vm("list_dir", vm_id)
        host = self._host_path(vm, path)
        if not host.is_dir():
            raise GuestFileNotFound(f"{path} is not a directory")
        entries: list[FileEntry] = []
        # Like the agent: which ``limit`` entries is the directory's order, then sorted.
        children = list(itertools.islice(host.iterdir(), limit))
        for child in sorted(children):
            st = child.lstat()
            if child.is_symlink():
                kind = "symlink"
            elif child.is_dir():
                kind = "directory"
            elif child.is_file():
                kind = "file"
            else:
                kind = "other"
            entries.append(
                FileEntry(
                    path=self._guest_path(vm, child),
                    name=child.name,
                    path_type=kind,  # type: ignore[typeddict-item]
                    size=st.st_size,
                    mode=st.st_mode & 0o7777,
                )
            )
        return entries

    async def read_file(self, vm_id: str, path: str, max_bytes: int | None = None) -> bytes:
        vm = self._running_vm("read_file", vm_id)
        host = self._host_path(vm, path)
        if not host.is_file():
            raise GuestFileNotFound(f"{path} does not exist")
        with host.open("rb") as file:
            data = file.read(-1 if max_bytes is None else max_bytes + 1)
        if max_bytes is not None and len(data) > max_bytes:
            raise GuestFileTooLarge(f"{path} is larger than {max_bytes} bytes")
        return data

    async def read_file_stream(self, vm_id: str, path: str) -> AsyncIterator[bytes]:
        vm = self._running_vm("read_file", vm_id)
        host = self._host_path(vm, path)
        if not host.is_file():
            raise GuestFileNotFound(f"{path} does not exist")
        offset = 0
        while True:
            # Opened per chunk: a stream dropped unread must not leave a file open.
            with host.open("rb") as file:
                file.seek(offset)
                chunk = file.read(64 * 1024)
            if not chunk:
                return
            offset += len(chunk)
            yield chunk

    async def write_file(
        self, vm_id: str, path: str, content: bytes, mode: int | None = None
    ) -> None:
        vm = self._running_vm("write_file", vm_id)
        host = self._host_path(vm, path)
        if host.is_dir():
            raise NodeBadRequest(f"{path} is a directory")
        host.parent.mkdir(parents=True, exist_ok=True)
        host.write_bytes(content)
        if mode is not None:
            host.chmod(mode)

    async def make_dir(self, vm_id: str, path: str) -> None:
        vm = self._running_vm("make_dir", vm_id)
        self._host_path(vm, path).mkdir(parents=True, exist_ok=True)

    async def move_path(self, vm_id: str, src: str, dst: str) -> None:
        vm = self._running_vm("move_path", vm_id)
        source, target = self._host_path(vm, src), self._host_path(vm, dst)
        if not source.exists():
            raise GuestFileNotFound(f"{src} does not exist")
        target.parent.mkdir(parents=True, exist_ok=True)
        source.rename(target)

    async def delete_path(self, vm_id: str, path: str) -> None:
        vm = self._running_vm("delete_path", vm_id)
        host = self._host_path(vm, path)
        if host == vm.workspace:
            raise PathNotAllowed("refusing to delete the workspace root")
        if host.is_dir() and not host.is_symlink():
            shutil.rmtree(host)
        elif host.exists() or host.is_symlink():
            host.unlink()
        else:
            raise GuestFileNotFound(f"{path} does not exist")

    async def archive(self, vm_id: str, root: str, fmt: ArchiveFormat) -> AsyncIterator[bytes]:
        vm = self._running_vm("archive", vm_id)
        host = self._host_path(vm, root)
        if not host.is_dir():
            raise GuestFileNotFound(f"{root} is not a directory")
        buffer = io.BytesIO()
        if fmt == "zip":
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
                for file in sorted(p for p in host.rglob("*") if p.is_file()):
                    archive.write(file, file.relative_to(host).as_posix())
        else:
            with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
                archive.add(host, arcname=".")
        data = buffer.getvalue()
        for start in range(0, len(data), 64 * 1024):
            yield data[start : start + 64 * 1024]

    async def open_terminal(self, vm_id: str, cols: int = 80, rows: int = 24) -> _PtyTerminal:
        vm = self._running_vm("open_terminal", vm_id)
        return await _PtyTerminal.spawn(vm.workspace, cols, rows)


class _PtyTerminal:
    """A real ``bash`` on a PTY, read without blocking the event loop."""

    def __init__(self, pid: int, fd: int) -> None:
        self._pid, self._fd = pid, fd
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._closed = False
        asyncio.get_running_loop().add_reader(fd, self._on_readable)

    @classmethod
    async def spawn(cls, cwd: Path, cols: int, rows: int) -> _PtyTerminal:
        pid, fd = pty.fork()
        if pid == 0:  # child
            os.chdir(cwd)
            env = {"TERM": "xterm-256color", "HOME": str(cwd), "PATH": os.environ["PATH"]}
            os.execvpe("bash", ["bash", "--noprofile", "--norc", "-i"], env)  # noqa: S606, S607
        terminal = cls(pid, fd)
        await terminal.resize(cols, rows)
        return terminal

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, 65536)
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self._fd)
        self._queue.put_nowait(data)

    async def write(self, data: bytes) -> None:
        if not self._closed:
            os.write(self._fd, data)

    async def read(self) -> bytes:
        if self._closed and self._queue.empty():
            return b""
        return await self._queue.get()

    async def resize(self, cols: int, rows: int) -> None:
        if not self._closed:
            ioctl(self._fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._fd)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            await loop.run_in_executor(None, os.waitpid, self._pid, 0)
        os.close(self._fd)
        self._queue.put_nowait(b"")
