"""Fixtures for the node agent: tokens, images, the agent in-process and as a real process.

- ``agent_app`` / ``agent_client``: the FastAPI app in-process (``TestClient``), fake image.
- ``manager``: a started ``VMManager`` on the fake image (no QEMU until a test starts a VM).
- ``start_agent``: factory starting ``python -m node_agent`` as a real subprocess.
- ``guest_image_dir``: the real guest image; skips when it is not built, unless
  ``PEQUEROKU_REQUIRE_VM`` is set (CI), where a missing image is a failure.
- ``fake_guest``: a local SSH server standing in for a guest: real SSH, the host's bash, ``/app``
  mapped to a temporary directory.

``token``, ``start_agent`` and ``guest_image_dir`` are defined in ``tests.support.fixtures.agents``
(reconcile and sockets use them too); helpers are in ``tests.support.agents``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncssh
import pytest
from fastapi.testclient import TestClient

from node_agent.app import create_app
from node_agent.config import AgentConfig
from node_agent.identity import load_or_create_node_key, public_line
from node_agent.vms import VMManager
from tests.support.agents import host_kernel, make_fake_image
from tests.support.fake_guest import INSTANCE_ID, AcceptKeys, FakeGuest, guest_handler
from tests.support.fixtures.agents import guest_image_dir, start_agent, token

# Fixtures defined in tests.support, registered here by name.
__all__ = ["guest_image_dir", "start_agent", "token"]


@pytest.fixture
def fake_image_dir(tmp_path: Path) -> Path:
    return make_fake_image(tmp_path / "images")


@pytest.fixture
def kernel_image_dir(tmp_path: Path) -> Path:
    """An image QEMU really starts (the host's kernel) that never reaches a guest userspace:
    enough to launch, sandbox and stop real QEMU processes in a second."""
    found = host_kernel()
    if found is None or os.geteuid() != 0:
        pytest.skip("needs root and a kernel with its initrd in /boot")
    root = make_fake_image(tmp_path / "kernel-images")
    for name, source in zip(("vmlinuz", "initrd.img"), found, strict=True):
        (root / "default" / name).unlink()
        (root / "default" / name).symlink_to(source)
    (root / "default" / "cmdline").write_text("console=ttyS0 panic=-1\n")
    return root


@pytest.fixture
async def manager(tmp_path: Path, fake_image_dir: Path, token: str) -> AsyncIterator[VMManager]:
    config = AgentConfig(
        data_dir=tmp_path / "data", token=token, image_dir=fake_image_dir, accel="tcg"
    )
    vms = VMManager(config)
    await vms.startup()
    yield vms
    await vms.shutdown()


@pytest.fixture
def agent_client(tmp_path: Path, fake_image_dir: Path, token: str) -> Iterator[TestClient]:
    config = AgentConfig(
        data_dir=tmp_path / "data", token=token, image_dir=fake_image_dir, accel="tcg"
    )
    with TestClient(create_app(config)) as client:
        yield client


@pytest.fixture
async def fake_guest() -> AsyncIterator[FakeGuest]:
    root = Path(tempfile.mkdtemp(prefix="pqk-guest-"))  # never under a path containing /app
    workspace, id_file = root / "ws", root / "instance_id"
    workspace.mkdir()
    (workspace / "etc").symlink_to("/etc")
    id_file.write_text(INSTANCE_ID + "\n")
    key = load_or_create_node_key(root / "ssh")
    authorized = root / "authorized_keys"
    authorized.write_text(public_line(key) + "\n")
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    server = await asyncssh.create_server(
        AcceptKeys,
        "127.0.0.1",
        0,
        server_host_keys=[host_key],
        authorized_client_keys=str(authorized),
        process_factory=guest_handler(workspace, id_file),
        encoding=None,
    )
    port = server.sockets[0].getsockname()[1]
    try:
        public = asyncssh.import_public_key(host_key.export_public_key())
        yield FakeGuest(port=port, workspace=workspace, key=key, host_key=public)
    finally:
        server.close()
        await server.wait_closed()
        shutil.rmtree(root, ignore_errors=True)
