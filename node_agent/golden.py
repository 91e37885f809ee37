"""Golden snapshots: one booted-to-ready guest per image and VM shape, saved once, restored by
every create of that shape instead of a boot.

Entry points: ``GoldenStore`` (``find``, ``install``, ``clone_into``, ``status``, ``mark``),
``Golden``, ``shape_name``.

A snapshot lives in ``<data-dir>/golden/<image>-<vcpus>c-<memory_mb>m/``: the guest's disk
overlay (on the image's base), its memory and device state, and ``golden.json`` with the
template identity it was booted with and the ``qemu.state_key`` it was saved under. A snapshot
whose key differs from the current image, kernel, QEMU, machine or accelerator is never used
(the create cold-boots and ``/health`` says why). A clone gets a copy of the overlay and a hard
link to the state (read once at restore, never written), and is personalised by the agent
right after the restore (``guest.ADOPT_SCRIPT``): until then it carries the template identity.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from .identity import ensure_private_dir, write_private


def shape_name(image: str, vcpus: int, memory_mb: int) -> str:
    return f"{image}-{vcpus}c-{memory_mb}m"


@dataclass(frozen=True)
class Golden:
    root: Path
    instance_id: str  # the template identity the saved guest holds
    host_public_key: str  # its host key (OpenSSH public line): pinned until adoption
    state_key: str
    disk_bytes: int  # the overlay's virtual size: a clone's disk is at least this

    @property
    def overlay(self) -> Path:
        return self.root / "overlay.qcow2"

    @property
    def state(self) -> Path:
        return self.root / "memory.state"

    @property
    def meta(self) -> Path:
        return self.root / "golden.json"


class GoldenStore:
    def __init__(self, data_dir: Path) -> None:
        self.root = ensure_private_dir(data_dir / "golden")
        self._status: dict[str, str] = {}

    def mark(self, shape: str, text: str) -> None:
        self._status[shape] = text

    def status(self) -> dict[str, str]:
        """Per shape: "ready", "building", or why creates of it cold-boot."""
        return dict(self._status)

    def find(self, shape: str, state_key: str) -> Golden | None:
        """The usable snapshot of ``shape``, or None (and the status says why)."""
        root = self.root / shape
        try:
            data = json.loads((root / "golden.json").read_text())
            golden = Golden(root=root, **data)
        except (OSError, ValueError, TypeError):
            if self._status.get(shape) not in ("building",):
                self._status.pop(shape, None)
            return None
        if not (golden.overlay.is_file() and golden.state.is_file()):
            self._status[shape] = "incomplete snapshot: creates cold-boot until it is rebuilt"
            return None
        if golden.state_key != state_key:
            self._status[shape] = (
                "made by another image, kernel, QEMU or machine: creates cold-boot until it is "
                "rebuilt"
            )
            return None
        self._status[shape] = "ready"
        return golden

    def install(
        self, shape: str, build_dir: Path, instance_id: str, host_key: asyncssh.SSHKey,
        state_key: str, disk_bytes: int,
    ) -> Golden:  # fmt: skip
        """Move a finished build (overlay + state) into place, replacing an older snapshot."""
        root = self.root / shape
        meta = {
            "instance_id": instance_id,
            "host_public_key": host_key.export_public_key().decode().strip(),
            "state_key": state_key,
            "disk_bytes": disk_bytes,
        }
        write_private(build_dir / "golden.json", json.dumps(meta, indent=2).encode())
        old = self.root / f".old-{shape}"
        shutil.rmtree(old, ignore_errors=True)
        if root.exists():
            root.replace(old)
        build_dir.replace(root)
        shutil.rmtree(old, ignore_errors=True)
        self._status[shape] = "ready"
        return Golden(root=root, **meta)  # type: ignore[arg-type]

    @staticmethod
    def clone_into(golden: Golden, overlay: Path, state: Path) -> None:
        """The clone's own overlay (a copy: it diverges) and the state (a link: read once)."""
        tmp = overlay.with_suffix(".tmp")
        shutil.copyfile(golden.overlay, tmp)
        os.chmod(tmp, 0o600)
        tmp.replace(overlay)
        state.unlink(missing_ok=True)
        os.link(golden.state, state)

    @staticmethod
    def public_key(golden: Golden) -> asyncssh.SSHKey:
        return asyncssh.import_public_key(golden.host_public_key)
