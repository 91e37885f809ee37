"""The contract between the web service and a compute node.

Everything above this module (reconciler, REST views, sockets, AI tools) talks to a node
through a ``NodeDriver``. Two implementations exist:

- ``vm_manager.drivers.http.HttpNodeDriver``: the node agent's HTTP/WebSocket API (production).
- ``vm_manager.drivers.memory.InMemoryNodeDriver``: a fake for fast tests, same semantics.

``get_node_driver(node)`` (in ``vm_manager.drivers``) picks one from ``settings.NODE_DRIVER``.
All methods are async: sync callers wrap them with ``asgiref.sync.async_to_sync``.
Paths are absolute guest paths confined to ``WORKSPACE_ROOT``; anything else raises
``PathNotAllowed``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal, NotRequired, Protocol, TypedDict, runtime_checkable

WORKSPACE_ROOT = "/app"

VMState = Literal["running", "stopped", "error"]
PathType = Literal["file", "directory", "symlink", "other"]
ArchiveFormat = Literal["zip", "tar.gz"]
GuestEgress = Literal["public", "none"]


class VMSpec(TypedDict):
    vm_id: str
    vcpus: int
    memory_mb: int
    disk_gib: int
    image: str


class VMStatus(TypedDict):
    vm_id: str
    state: VMState
    vcpus: int
    memory_mb: int
    disk_gib: int
    ssh_ready: bool
    detail: str
    # Power-off detail (the state stays running/stopped): a suspended VM resumes with its
    # processes on the next start; last_boot says how the last start went ("cold" or
    # "restored") and boot_detail why it was cold when a restore was expected.
    suspended: NotRequired[bool]
    last_boot: NotRequired[Literal["cold", "restored", ""]]
    boot_detail: NotRequired[str]


class NodeHealth(TypedDict):
    arch: str
    kvm_available: bool
    accel: str
    capacity_vcpus: int
    capacity_mem_mb: int
    used_vcpus: int
    used_mem_mb: int
    running_vms: int
    capacity_disk_mb: int
    free_disk_mb: int
    # The agent's guest egress policy is in force; placement skips a node without it.
    guest_isolation: bool
    guest_egress: GuestEgress
    isolation_detail: str
    # Per image and VM shape: "ready" (creates restore it), "building", or why they cold-boot.
    golden_snapshots: dict[str, str]


class ExecResult(TypedDict):
    exit_code: int
    stdout: str
    stderr: str
    timed_out: bool


class FileEntry(TypedDict):
    path: str
    name: str
    path_type: PathType
    size: int
    mode: int


class VMStats(TypedDict):
    ts: float
    cpu_percent: float
    rss_bytes: int
    rss_mib: float
    num_threads: int
    io: dict[str, int]


class NodeError(Exception):
    """Base class for every failure talking to a node."""


class NodeUnavailable(NodeError):
    """The node agent did not answer (connection refused, timeout, 5xx)."""


class NodeAuthError(NodeError):
    """The node agent refused our token."""


class VMNotFound(NodeError):
    """No VM with that id on the node."""


class VMNotRunning(NodeError):
    """The operation needs a running VM with SSH ready."""


class PathNotAllowed(NodeError):
    """The path escapes the workspace root (``..``, absolute escape, symlink escape)."""


class PathTooLong(PathNotAllowed):
    """The path is over Linux's limits (4096 bytes a path, 255 a name)."""


class GuestFileNotFound(NodeError):
    """The path does not exist inside the guest."""


class GuestFileTooLarge(NodeError):
    """The file is larger than the caller's ``max_bytes``; the agent sent none of it."""


class NodeBadRequest(NodeError):
    """The agent rejected the request as malformed (4xx other than the cases above)."""


@runtime_checkable
class TerminalSession(Protocol):
    """One PTY in a VM. ``read`` returns b"" once the session has ended."""

    async def write(self, data: bytes) -> None: ...

    async def read(self) -> bytes: ...

    async def resize(self, cols: int, rows: int) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class NodeDriver(Protocol):
    async def health(self) -> NodeHealth: ...

    async def vm_create(self, spec: VMSpec) -> VMStatus:
        """Create (not start) a VM. Idempotent: the same id returns the existing VM."""
        ...

    async def vm_start(self, vm_id: str) -> VMStatus: ...

    async def vm_stop(self, vm_id: str, timeout: float = 30.0) -> VMStatus:
        """Graceful ACPI powerdown, hard kill after ``timeout``; a stopped VM is a no-op."""
        ...

    async def vm_suspend(self, vm_id: str) -> VMStatus:
        """Save memory and device state beside the disk and stop: the state becomes
        ``stopped`` with ``suspended`` true, and the VM holds no host RAM. The next
        ``vm_start`` restores it (``last_boot`` "restored"), or cold-boots from the disk when
        the state is unusable (``boot_detail`` says why). ``vm_stop`` discards a saved
        state. A stopped VM is a no-op."""
        ...

    async def vm_delete(self, vm_id: str) -> None:
        """Stop if needed and remove the VM and its disk. Deleting a missing VM is a no-op."""
        ...

    async def vm_status(self, vm_id: str) -> VMStatus: ...

    async def vm_list(self) -> list[VMStatus]: ...

    async def vm_stats(self, vm_id: str) -> VMStats: ...

    async def exec(self, vm_id: str, cmd: str, timeout: float = 30.0) -> ExecResult:
        """Run ``cmd`` with ``bash -lc`` in ``WORKSPACE_ROOT``; output is size-bounded."""
        ...

    async def list_dir(self, vm_id: str, path: str, limit: int | None = None) -> list[FileEntry]:
        """The entries of a directory, sorted by name; at most ``limit`` of them when given."""
        ...

    async def read_file(self, vm_id: str, path: str, max_bytes: int | None = None) -> bytes:
        """The whole file; ``GuestFileTooLarge`` (nothing read) when it exceeds ``max_bytes``."""
        ...

    def read_file_stream(self, vm_id: str, path: str) -> AsyncIterator[bytes]:
        """Stream a file in chunks (downloads); errors come before the first chunk."""
        ...

    async def write_file(
        self, vm_id: str, path: str, content: bytes, mode: int | None = None
    ) -> None:
        """Create or replace a file, creating parent directories."""
        ...

    async def make_dir(self, vm_id: str, path: str) -> None: ...

    async def move_path(self, vm_id: str, src: str, dst: str) -> None: ...

    async def delete_path(self, vm_id: str, path: str) -> None: ...

    def archive(self, vm_id: str, root: str, fmt: ArchiveFormat) -> AsyncIterator[bytes]:
        """Stream an archive of ``root`` in chunks."""
        ...

    async def open_terminal(self, vm_id: str, cols: int = 80, rows: int = 24) -> TerminalSession:
        """A login shell in ``WORKSPACE_ROOT`` on a PTY."""
        ...
