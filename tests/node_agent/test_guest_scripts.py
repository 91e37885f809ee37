"""The guest-side file scripts, run by the host's bash on a directory standing in for /app.

The same scripts run inside real guests in ``test_vm_agent.py``; here they run in milliseconds.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from node_agent import guest


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "ws"
    monkeypatch.setattr(guest, "_GUARD", guest._GUARD.replace("/app", str(root)))
    scripts = {name: text.replace("/app", str(root)) for name, text in guest._SCRIPTS.items()}
    monkeypatch.setattr(guest, "_SCRIPTS", scripts)
    (root / "d" / "sub").mkdir(parents=True)
    (root / "etc").symlink_to("/etc")
    (root / "outside").symlink_to(tmp_path)
    return root


def run(workspace: Path, name: str, *args: str, stdin: bytes = b"") -> tuple[int, bytes]:
    local = [arg.replace("/app", str(workspace)) for arg in args]
    command = guest._script_command(name, *local)
    done = subprocess.run(["bash", "-c", command], input=stdin, capture_output=True, check=False)
    return done.returncode, done.stdout


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("read", ("/app/etc/passwd",)),
        ("write", ("/app/etc/pwned", "")),
        ("write", ("/app/outside/pwned", "")),
        ("list", ("/app/etc",)),
        ("mkdir", ("/app/outside/newdir",)),
        ("move", ("/app/d", "/app/outside/d")),
        ("delete", ("/app/etc",)),
        ("delete", ("/app",)),
        ("tar", ("/app/outside", "z")),
    ],
)
def test_symlinks_leaving_the_workspace_are_refused(workspace, name, args):
    code, _ = run(workspace, name, *args, stdin=b"x")

    assert code == 99
    assert not (workspace.parent / "pwned").exists()
    assert not (workspace.parent / "newdir").exists()
    assert (workspace / "d").is_dir()


def test_write_creates_parents_and_read_returns_the_bytes(workspace):
    assert run(workspace, "write", "/app/new/dir/f.bin", "640", stdin=b"\x00\xff")[0] == 0

    assert run(workspace, "read", "/app/new/dir/f.bin") == (0, b"\x00\xff")
    assert (workspace / "new/dir/f.bin").stat().st_mode & 0o777 == 0o640


def test_list_reports_kind_size_mode_and_name(workspace):
    (workspace / "f.txt").write_text("hello")

    code, raw = run(workspace, "list", "/app")

    records = sorted(r.split(b"\t") for r in raw.split(b"\0") if r)
    assert code == 0
    assert sorted((r[3], r[0]) for r in records) == [
        (b"d", b"d"),
        (b"etc", b"l"),
        (b"f.txt", b"f"),
        (b"outside", b"l"),
    ]
    assert [b"f", b"5", b"644", b"f.txt"] in records


def test_missing_paths_and_directories_are_told_apart(workspace):
    assert run(workspace, "read", "/app/missing")[0] == 98
    assert run(workspace, "delete", "/app/missing")[0] == 98
    assert run(workspace, "write", "/app/d", "", stdin=b"x")[0] == 97


def test_move_and_delete_inside_the_workspace(workspace):
    run(workspace, "write", "/app/a.txt", "", stdin=b"a")

    assert run(workspace, "move", "/app/a.txt", "/app/x/y/b.txt")[0] == 0
    assert (workspace / "x/y/b.txt").read_text() == "a"
    assert run(workspace, "delete", "/app/x")[0] == 0
    assert not (workspace / "x").exists()


def test_a_bounded_read_sends_no_more_than_asked(workspace):
    (workspace / "ten.bin").write_bytes(b"0123456789")

    assert run(workspace, "read", "/app/ten.bin", "4") == (0, b"0123")
    assert run(workspace, "read", "/app/ten.bin", "") == (0, b"0123456789")
    assert run(workspace, "check_file", "/app/ten.bin")[0] == 0
    assert run(workspace, "check_file", "/app/d")[0] == 98


def test_a_capped_listing_sends_no_more_entries_than_asked(workspace):
    for index in range(9):
        (workspace / "d" / f"f{index}").write_text("")

    code, raw = run(workspace, "list", "/app/d", "4")

    assert code == 0
    assert len([record for record in raw.split(b"\0") if record]) == 4
    assert len([r for r in run(workspace, "list", "/app/d", "")[1].split(b"\0") if r]) == 10
