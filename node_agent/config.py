"""Agent configuration, built from the command line (``node_agent.__main__``) or by tests."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_IMAGE_DIR = Path(
    os.environ.get("PEQUEROKU_IMAGE_DIR", str(Path.home() / ".cache" / "pequeroku" / "images"))
)


@dataclass(frozen=True)
class AgentConfig:
    data_dir: Path
    token: str
    image_dir: Path = DEFAULT_IMAGE_DIR
    accel: str = "auto"  # "auto" probes KVM once at startup; "kvm"/"tcg" force one

    def __repr__(self) -> str:  # the token must never reach a log line
        return (
            f"AgentConfig(data_dir={self.data_dir}, image_dir={self.image_dir}, accel={self.accel})"
        )
