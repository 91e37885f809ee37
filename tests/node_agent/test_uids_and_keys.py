"""VM uids (one per VM, never shared between agents) and the agent's private files."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import asyncssh
import pytest

from node_agent import uids
from node_agent.__main__ import read_token
from node_agent.errors import QemuError
from node_agent.identity import (
    HOST_KEY_FW_CFG,
    GuestIdentity,
    load_or_create_node_key,
    write_private,
)
from node_agent.uids import UidPool, as_guest, parse_uid_range


def record(path: Path, uid: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"uid": uid}))
    return path


def test_two_agents_sharing_a_claims_dir_never_get_the_same_uid(tmp_path):
    claims = tmp_path / "claims"
    first, second = UidPool(5000, 5010, claims), UidPool(5000, 5010, claims)

    handed = [first.claim(tmp_path / f"a/{n}/vm.json") for n in range(5)]
    handed += [second.claim(tmp_path / f"b/{n}/vm.json") for n in range(5)]

    assert len(set(handed)) == 10
    assert all(5000 <= uid < 5010 for uid in handed)  # 5010 is the self-test's
    with pytest.raises(QemuError, match="no free VM uid"):
        second.claim(tmp_path / "b/full/vm.json")


def test_a_claim_whose_record_is_gone_is_reused_but_a_fresh_one_is_not(tmp_path, monkeypatch):
    pool = UidPool(5000, 5001, tmp_path / "claims")
    owner = record(tmp_path / "gone/vm.json", 0)
    uid = pool.claim(owner)
    owner.write_text(json.dumps({"uid": uid}))

    with pytest.raises(QemuError):
        pool.claim(tmp_path / "other/vm.json")  # the only uid is held
    owner.unlink()
    with pytest.raises(QemuError):
        pool.claim(tmp_path / "other/vm.json")  # record gone, but the claim is fresh
    monkeypatch.setattr(uids, "FRESH_CLAIM_SECONDS", 0.0)
    time.sleep(0.01)

    assert pool.claim(tmp_path / "other/vm.json") == uid


def test_ensure_keeps_a_vms_uid_and_release_frees_it(tmp_path):
    pool = UidPool(5000, 5100, tmp_path / "claims")
    owner = tmp_path / "vm/vm.json"
    uid = pool.claim(owner)

    assert pool.ensure(uid, owner) == uid
    assert pool.ensure(None, tmp_path / "old/vm.json") != uid  # recorded before uids: a new one
    pool.release(uid, owner)
    assert not (tmp_path / "claims" / str(uid)).exists()
    assert stat.S_IMODE((tmp_path / "claims").stat().st_mode) == 0o700


@pytest.mark.parametrize("text", ["0-100", "5-5", "900-2000", "x-y", "1000", "1000-4294967295"])
def test_uid_ranges_that_include_root_or_overflow_are_refused(text):
    with pytest.raises(ValueError, match="range"):
        parse_uid_range(text)


def test_guest_processes_never_run_as_root_or_as_the_agent():
    with pytest.raises(QemuError):
        as_guest(0)
    with pytest.raises(QemuError):
        as_guest(os.geteuid())

    kwargs = as_guest(5000, (36,))
    assert (kwargs["user"], kwargs["group"], kwargs["extra_groups"]) == (5000, 5000, [36])
    assert "NODE_AGENT_TOKEN" not in kwargs["env"] and kwargs["umask"] == 0o077


# -- private files -------------------------------------------------------------------------------


def test_the_node_key_is_created_0600_in_a_0700_dir_even_if_the_dir_was_loose(tmp_path):
    ssh_dir = tmp_path / "ssh"
    ssh_dir.mkdir(mode=0o755)
    ssh_dir.chmod(0o755)

    key = load_or_create_node_key(ssh_dir)
    again = load_or_create_node_key(ssh_dir)

    assert stat.S_IMODE(ssh_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((ssh_dir / "id_ed25519").stat().st_mode) == 0o600
    assert key.export_public_key() == again.export_public_key()
    assert [p.name for p in ssh_dir.iterdir()] == ["id_ed25519"]  # no temporary left


def test_private_files_are_never_readable_by_others_not_even_for_a_moment(tmp_path):
    old = os.umask(0)  # the loosest umask: the mode must come from the open itself
    try:
        write_private(tmp_path / "secret", b"x")
    finally:
        os.umask(old)

    assert stat.S_IMODE((tmp_path / "secret").stat().st_mode) == 0o600


def test_each_vm_gets_its_own_host_key_and_qemus_command_line_never_holds_it(tmp_path):
    node_key = asyncssh.generate_private_key("ssh-ed25519")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = GuestIdentity.create(tmp_path / "a"), GuestIdentity.create(tmp_path / "b")
    fd = first.host_key_fd()
    try:
        args = first.qemu_args(node_key, fd)
        handed = os.read(fd, 10_000)
    finally:
        os.close(fd)

    assert first.host_key.export_public_key() != second.host_key.export_public_key()
    assert first.instance_id != second.instance_id
    assert f"name={HOST_KEY_FW_CFG},file=/proc/self/fd/{fd}" in args
    assert b"PRIVATE KEY" in handed
    assert not any("PRIVATE" in arg or "BEGIN" in arg for arg in args)
    assert stat.S_IMODE((tmp_path / "a" / "ssh_host_ed25519_key").stat().st_mode) == 0o600


def test_a_token_file_others_can_read_is_refused(tmp_path):
    token_file = tmp_path / "agent.token"
    token_file.write_text("t" * 32)
    token_file.chmod(0o644)

    with pytest.raises(SystemExit, match="chmod 600"):
        read_token(token_file)
    token_file.chmod(0o600)
    assert read_token(token_file) == "t" * 32
