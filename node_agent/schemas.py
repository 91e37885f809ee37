"""Request and response bodies of the agent's API (mirrors ``vm_manager.drivers.base``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class VMSpecIn(BaseModel):
    vm_id: str = Field(min_length=1, max_length=64)
    vcpus: int = Field(ge=1, le=256)
    memory_mb: int = Field(ge=64, le=1024 * 1024)
    disk_gib: int = Field(ge=1, le=4096)
    image: str = "default"


class VMStatusOut(BaseModel):
    vm_id: str
    state: Literal["running", "stopped", "error"]
    vcpus: int
    memory_mb: int
    disk_gib: int
    ssh_ready: bool
    detail: str
    suspended: bool = False
    last_boot: Literal["cold", "restored", ""] = ""
    boot_detail: str = ""


class NodeHealthOut(BaseModel):
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
    guest_isolation: bool
    guest_egress: Literal["public", "none"]
    isolation_detail: str
    # Per image and VM shape ("default-1c-1024m"): "ready" (creates restore it), "building",
    # or why creates of that shape cold-boot.
    golden_snapshots: dict[str, str] = {}


class VMStatsOut(BaseModel):
    ts: float
    cpu_percent: float
    rss_bytes: int
    rss_mib: float
    num_threads: int
    io: dict[str, int]


class ExecIn(BaseModel):
    cmd: str = Field(min_length=1)
    timeout: float = Field(default=30.0, gt=0, le=3600)


class ExecOut(BaseModel):
    exit_code: int
    stdout: str
    stderr: str
    timed_out: bool


class FileEntryOut(BaseModel):
    path: str
    name: str
    path_type: Literal["file", "directory", "symlink", "other"]
    size: int
    mode: int


class PathIn(BaseModel):
    path: str


class MoveIn(BaseModel):
    src: str
    dst: str


class ErrorOut(BaseModel):
    detail: str
    code: str
