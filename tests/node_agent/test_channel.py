"""The guest channel: the agent's ``GuestChannel`` against the guest's daemon
(``scripts/guest/pequeroku-channel.c``, built and run on this host behind a unix socket the way
QEMU serves the virtio-serial port), and against guests that answer wrongly on purpose."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncssh
import pytest

from node_agent.channel import MAX_FRAME, GuestChannel
from node_agent.errors import IdentityMismatchError, SSHNotReadyError

SOURCE = Path(__file__).resolve().parents[2] / "scripts" / "guest" / "pequeroku-channel.c"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The daemon built as the image build does (but dynamic: quicker)."""
    if shutil.which("cc") is None:
        pytest.skip("needs a C compiler (scripts/setup.sh installs gcc)")
    binary = tmp_path_factory.mktemp("channel") / "pequeroku-channel"
    build = ["cc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(binary), str(SOURCE)]
    subprocess.run(build, check=True)
    return binary


async def accept_one(path: Path) -> tuple[socket.socket, asyncio.Task[socket.socket]]:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    listener.setblocking(False)
    loop = asyncio.get_running_loop()

    async def accept() -> socket.socket:
        conn, _ = await loop.sock_accept(listener)
        return conn

    return listener, asyncio.create_task(accept())


@pytest.fixture
async def daemon_channel(tmp_path: Path, daemon: Path) -> AsyncIterator[tuple[GuestChannel, Path]]:
    """A channel whose guest end is the real daemon, its workspace and home temporary
    directories (the home with an empty ``.profile``)."""
    workspace, home = tmp_path / "app", tmp_path / "home"
    workspace.mkdir()
    home.mkdir()
    (home / ".profile").write_text("")
    path = tmp_path / "channel.sock"
    listener, accepted = await accept_one(path)
    channel = GuestChannel("vm1", path)
    request = asyncio.create_task(channel.ping(30.0))
    conn = await accepted
    conn.setblocking(True)
    process = subprocess.Popen(
        [
            str(daemon),
            "--fd",
            str(conn.fileno()),
            "--workspace",
            str(workspace),
            "--home",
            str(home),
        ],
        pass_fds=[conn.fileno()],
    )
    conn.close()
    await request
    try:
        yield channel, workspace
    finally:
        await channel.close()
        process.kill()
        process.wait()
        listener.close()


async def test_exec_runs_in_the_workspace_as_a_login_shell(daemon_channel):
    channel, workspace = daemon_channel

    result = await channel.exec("pwd; echo $USER $SHELL; echo oops >&2; exit 3", 10, 1024)

    assert result["exit_code"] == 3
    assert result["stdout"] == f"{workspace}\nroot /bin/bash\n"
    assert result["stderr"] == "oops\n"
    assert result["timed_out"] is False


async def test_exec_timeout_ends_the_whole_process_group_and_keeps_the_output(daemon_channel):
    channel, workspace = daemon_channel
    started = time.monotonic()

    result = await channel.exec("echo before; (sleep 30; touch late) & sleep 30", 1, 1024)

    assert result["exit_code"] == 124 and result["timed_out"] is True
    assert result["stdout"] == "before\n"
    assert time.monotonic() - started < 6
    await asyncio.sleep(0.5)
    assert not (workspace / "late").exists()


async def test_exec_output_is_bounded(daemon_channel):
    channel, _ = daemon_channel

    result = await channel.exec("head -c 3000000 /dev/zero | tr '\\0' a", 20, 1000)

    assert result["exit_code"] == 0
    assert result["stdout"] == "a" * 1000


async def test_requests_run_concurrently(daemon_channel):
    channel, _ = daemon_channel
    started = time.monotonic()

    first, second = await asyncio.gather(
        channel.exec("sleep 1; echo a", 10, 100), channel.exec("sleep 1; echo b", 10, 100)
    )

    assert (first["stdout"], second["stdout"]) == ("a\n", "b\n")
    assert time.monotonic() - started < 1.9


async def test_exit_codes_and_signals_are_reported_as_a_shell_would(daemon_channel):
    channel, _ = daemon_channel

    killed = await channel.exec("kill -TERM $$", 10, 100)
    piped = await channel.exec("yes | head -n 2", 10, 100)

    assert killed["exit_code"] == 128 + 15
    assert piped == {"exit_code": 0, "stdout": "y\ny\n", "stderr": "", "timed_out": False}


async def test_a_nul_ends_the_command(daemon_channel):
    channel, _ = daemon_channel

    result = await channel.exec("echo kept\0; echo dropped", 10, 100)

    assert result["stdout"] == "kept\n"


SPARE_READY = 0.8  # the daemon starts its spare 0.2 s after a command; it reads the profiles


async def test_each_command_starts_from_a_fresh_login_shell(daemon_channel):
    channel, workspace = daemon_channel
    await channel.exec("export LEAKED=1; cd /", 10, 100)
    await asyncio.sleep(SPARE_READY)

    result = await channel.exec("echo ${LEAKED-unset} $PWD", 10, 100)

    assert result["stdout"] == f"unset {workspace}\n"


async def test_a_command_sees_what_the_previous_one_changed_in_the_profiles(daemon_channel):
    channel, workspace = daemon_channel
    home = workspace.parent / "home"
    await channel.exec(
        "echo 'export FROM_FILE=$(cat ~/value)' >> ~/.profile; echo 1 >~/value", 10, 100
    )
    await asyncio.sleep(SPARE_READY)
    first = await channel.exec("echo $FROM_FILE", 10, 100)
    await asyncio.sleep(SPARE_READY)
    await channel.exec("echo 2 >~/value", 10, 100)  # read by the profile, not a profile itself
    await asyncio.sleep(SPARE_READY)
    second = await channel.exec("echo $FROM_FILE", 10, 100)
    await asyncio.sleep(SPARE_READY)  # a spare has read the profile: then it changes
    (home / ".profile").write_text("export FROM_FILE=edited\n")  # not through a command
    third = await channel.exec("echo $FROM_FILE", 10, 100)

    assert (first["stdout"], second["stdout"], third["stdout"]) == ("1\n", "2\n", "edited\n")


# -- guests that answer wrongly -------------------------------------------------------------------


@contextlib.asynccontextmanager
async def hostile_guest(
    tmp_path: Path, behave: Callable[[socket.socket, bytes], Awaitable[None]]
) -> AsyncIterator[GuestChannel]:
    """A channel whose guest end reads one request and then does ``behave``."""
    path = tmp_path / "channel.sock"
    listener, accepted = await accept_one(path)
    channel = GuestChannel("vm1", path)
    loop = asyncio.get_running_loop()

    async def play() -> None:
        conn = await accepted
        try:
            data = b""
            while data.count(b"\n") < 2:  # the leading newline, then the request
                data += await loop.sock_recv(conn, 65536)
            await behave(conn, data)
            await asyncio.sleep(30)
        finally:
            conn.close()

    player = loop.create_task(play())
    try:
        yield channel
    finally:
        await channel.close()
        player.cancel()
        with contextlib.suppress(BaseException):
            await player
        listener.close()


def request_id(data: bytes) -> int:
    return int(data.lstrip(b"\n").split(b" ", 1)[0])  # after the leading newline


def frame(rid: int, kind: str, data: bytes) -> bytes:
    return f"{rid} {kind} {len(data)}\n".encode() + data


async def test_an_oversized_answer_closes_the_channel_instead_of_filling_memory(tmp_path):
    async def flood(conn: socket.socket, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(OSError):
            await loop.sock_sendall(conn, frame(request_id(data), "ok", b"x" * (MAX_FRAME + 1)))

    async with hostile_guest(tmp_path, flood) as channel:
        with pytest.raises(SSHNotReadyError):
            await channel.ping(10.0)
        assert not channel.ready()


async def test_garbage_and_answers_to_other_requests_are_ignored(tmp_path):
    async def confuse(conn: socket.socket, data: bytes) -> None:
        rid = request_id(data)
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(
            conn,
            b"not a header\n1 2 3 4\n"
            + frame(rid + 1, "ok", b"wrong")
            + frame(rid, "ok", b"right"),
        )

    async with hostile_guest(tmp_path, confuse) as channel:
        assert await channel.ping(10.0) == "right"
        assert channel.ready()


async def test_a_guest_that_never_answers_leaves_the_channel_unready(tmp_path):
    async def silent(conn: socket.socket, data: bytes) -> None:
        pass

    async with hostile_guest(tmp_path, silent) as channel:
        with pytest.raises(SSHNotReadyError):
            await channel.ping(0.5)
        assert not channel.ready()


async def test_an_exec_result_from_the_guest_is_bounded_by_the_agents_limit(tmp_path):
    async def oversize(conn: socket.socket, data: bytes) -> None:
        rid = request_id(data)
        answer = frame(rid, "out", b"y" * 5000) + frame(rid, "out", b"z" * 5000)
        answer += frame(rid, "exit", b"0 0")
        await asyncio.get_running_loop().sock_sendall(conn, answer)

    async with hostile_guest(tmp_path, oversize) as channel:
        result = await channel.exec("true", 5, 100)
        assert result["stdout"] == "y" * 100


async def test_a_guest_not_holding_the_templates_id_is_given_no_identity(daemon_channel):
    channel, _ = daemon_channel
    host_key = asyncssh.generate_private_key("ssh-ed25519")

    with pytest.raises(IdentityMismatchError):
        await channel.adopt("template-id", "new-id", host_key, host_key, grow=False)
