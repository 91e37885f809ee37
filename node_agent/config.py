"""Agent configuration, built from the command line (``node_agent.__main__``) or by tests."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

DEFAULT_IMAGE_DIR = Path(
    os.environ.get("PEQUEROKU_IMAGE_DIR", str(Path.home() / ".cache" / "pequeroku" / "images"))
)
# Each VM's QEMU runs under its own uid from this range (the last one is the self-test's).
# 0x70000000-0x7000ffff: far above login users and the subuid blocks of container runtimes,
# below 2^31 where some tools start to misbehave.
DEFAULT_VM_UID_RANGE = (0x7000_0000, 0x7000_FFFF)
# Claims of VM uids, shared by every agent of this host so two agents never hand out one uid.
DEFAULT_UID_CLAIMS_DIR = Path("/run/pequeroku/vm-uids")
DEFAULT_MAX_ARCHIVE_BYTES = 1024 * 1024 * 1024

GuestEgress = Literal["public", "none"]


@dataclass(frozen=True)
class AgentConfig:
    data_dir: Path
    token: str
    image_dir: Path = DEFAULT_IMAGE_DIR
    accel: str = "auto"  # "auto" probes KVM once at startup; "kvm"/"tcg" force one
    guest_egress: GuestEgress = "public"
    vm_uid_range: tuple[int, int] = DEFAULT_VM_UID_RANGE
    uid_claims_dir: Path = DEFAULT_UID_CLAIMS_DIR
    max_archive_bytes: int = DEFAULT_MAX_ARCHIVE_BYTES
    golden_snapshots: bool = False  # the command line turns it on by default
    nft: str = "nft"
    # Where the API listens, so the start-up self-test can check guests cannot reach it.
    listen: tuple[tuple[str, int], ...] = ()

    def __repr__(self) -> str:  # the token must never reach a log line
        return (
            f"AgentConfig(data_dir={self.data_dir}, image_dir={self.image_dir}, "
            f"accel={self.accel}, guest_egress={self.guest_egress})"
        )
