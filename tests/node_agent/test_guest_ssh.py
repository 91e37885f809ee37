"""``node_agent.guest`` against a local SSH server standing in for a guest (no VM boots).

The server (``fake_guest`` in conftest) speaks real SSH and runs each command with the host's
bash, with ``/app`` and the instance id file mapped into a temporary directory; the VM tests
repeat all of this on real guests.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncssh
import pytest

from node_agent import guest
from node_agent.errors import (
    GuestFileNotFoundError,
    IdentityMismatchError,
    PathNotAllowedError,
    SSHNotReadyError,
)
from tests.support.fake_guest import INSTANCE_ID


async def test_banner_probe_sees_ssh(fake_guest):
    assert await guest.wait_for_banner(fake_guest.port)


async def test_connection_is_verified_and_reused(fake_guest):
    connection = fake_guest.connection()

    first = await connection.get()
    second = await connection.get()

    assert first is second and connection.ready()
    await connection.close()
    assert not connection.ready()


async def test_a_guest_with_another_instance_id_is_refused(fake_guest):
    connection = fake_guest.connection(instance_id="somebody-else")

    with pytest.raises(IdentityMismatchError):
        await connection.get()
    assert not connection.ready()


async def test_a_guest_with_another_host_key_is_refused_even_with_the_right_instance_id(
    fake_guest, caplog
):
    impostor = asyncssh.generate_private_key("ssh-ed25519")
    connection = fake_guest.connection(
        host_key=asyncssh.import_public_key(impostor.export_public_key())
    )

    with pytest.raises(IdentityMismatchError):
        await connection.get()
    assert not connection.ready()
    assert "identity mismatch: host key" in caplog.text


async def test_no_ssh_on_the_port_is_not_ready(fake_guest):
    connection = guest.GuestConnection(
        "vm1", INSTANCE_ID, lambda: None, fake_guest.key, fake_guest.host_key
    )

    with pytest.raises(SSHNotReadyError):
        await connection.get()


async def test_exec_reports_output_exit_code_and_timeouts(fake_guest):
    conn = await fake_guest.connection().get()

    done = await guest.exec_command(conn, "echo out; echo err >&2; exit 3", timeout=10)
    slow = await guest.exec_command(conn, "sleep 10", timeout=1)
    big = await guest.exec_command(conn, "head -c 1000000 /dev/zero", timeout=10)

    assert (done["stdout"], done["stderr"], done["exit_code"]) == ("out\n", "err\n", 3)
    assert slow["timed_out"] is True
    assert len(big["stdout"]) == guest.MAX_OUTPUT_BYTES
    conn.close()


async def test_exec_timeout_ends_the_whole_process_group_and_keeps_the_output(fake_guest):
    conn = await fake_guest.connection().get()
    pids = fake_guest.workspace / "pids"

    result = await guest.exec_command(
        conn, f"echo before; echo to-err >&2; sleep 60 & echo $! > {pids}; sleep 60", timeout=1
    )

    assert (result["timed_out"], result["exit_code"]) == (True, 124)
    assert (result["stdout"], result["stderr"]) == ("before\n", "to-err\n")
    background = int(pids.read_text())
    assert not Path(f"/proc/{background}").exists() or "Z" in _state(background)
    conn.close()


async def test_exec_runs_in_the_workspace_with_the_login_profile(fake_guest):
    conn = await fake_guest.connection().get()

    result = await guest.exec_command(conn, 'pwd; echo "$PATH" | grep -c /usr/bin', timeout=10)

    assert result["stdout"] == f"{fake_guest.workspace}\n1\n"
    assert (result["stderr"], result["exit_code"], result["timed_out"]) == ("", 0, False)
    conn.close()


async def test_spare_shells_run_each_command_as_a_fresh_login_shell(fake_guest, monkeypatch):
    connection = fake_guest.connection()
    used: list[bool] = []
    real = guest.exec_command

    async def recording(*args, spare=None, **kwargs):
        used.append(spare is not None)
        return await real(*args, spare=spare, **kwargs)

    monkeypatch.setattr(guest, "exec_command", recording)
    monkeypatch.setattr(guest, "SPARE_DELAY", 0.0)
    commands = (
        "export LEAK=1; cd /tmp; echo first",
        'echo "${LEAK:-unset} $(pwd)"',
        "cat; echo read-eof",
        "echo a\0echo b",
        "echo " + "x" * (guest.MAX_SPARE_COMMAND + 10) + " | wc -c",
        "exit 7",
    )

    results = []
    for cmd in commands:
        results.append(await connection.exec(cmd, timeout=10))
        async with asyncio.timeout(10):  # the spares are back before the next call
            while len(connection._spares) < guest.SPARE_SHELLS:
                await asyncio.sleep(0.01)

    assert [r["stdout"] for r in results] == [
        "first\n",
        f"unset {fake_guest.workspace}\n",
        "read-eof\n",
        "a\n",
        f"{guest.MAX_SPARE_COMMAND + 11}\n",
        "",
    ]
    assert [r["exit_code"] for r in results] == [0, 0, 0, 0, 0, 7]
    assert all(r["stderr"] == "" for r in results)
    assert used == [False, True, True, True, False, True]  # none yet; too long for a spare
    await connection.close()
    assert (await connection.exec("echo again", timeout=10))["stdout"] == "again\n"
    await connection.close()


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


async def test_files_round_trip_and_symlink_escape_is_refused(fake_guest):
    conn = await fake_guest.connection().get()

    await guest.write_file(conn, "/app/src/a.txt", b"\x00data", 0o600)
    entries = await guest.list_dir(conn, "/app")
    content = await guest.read_file(conn, "/app/src/a.txt")
    await guest.move_path(conn, "/app/src/a.txt", "/app/b.txt")
    with pytest.raises(PathNotAllowedError):
        await guest.read_file(conn, "/app/etc/passwd")
    with pytest.raises(PathNotAllowedError):
        await guest.write_file(conn, "/app/etc/pequeroku-test", b"x", None)
    with pytest.raises(GuestFileNotFoundError):
        await guest.read_file(conn, "/app/src/a.txt")

    assert content == b"\x00data"
    assert [(e["name"], e["path_type"]) for e in entries] == [
        ("etc", "symlink"),
        ("src", "directory"),
    ]
    assert (fake_guest.workspace / "b.txt").read_bytes() == b"\x00data"
    assert not Path("/etc/pequeroku-test").exists()
    tar = b"".join([chunk async for chunk in guest.tar_stream(conn, "/app", gzip=True)])
    assert tar[:2] == b"\x1f\x8b"
    conn.close()
