"""What a newcomer sees from ``make run`` when something goes wrong, and when they press Ctrl-C
under make (the fresh-clone test, test_run_local_vm.py, covers the whole happy path)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.deploy import base_env, stop_group
from tests.support.host import free_port

IMAGE_DIR = Path(
    os.environ.get("PEQUEROKU_IMAGE_DIR", Path.home() / ".cache" / "pequeroku" / "images")
)


def test_a_failing_setup_names_its_log_and_keeps_the_noise_there(project_copy: Path) -> None:
    log = project_copy / "setup.log"
    env = base_env(PYTHON="false", PEQUEROKU_SETUP_LOG=str(log))

    result = subprocess.run(
        ["bash", "scripts/setup.sh", "--no-apt"],
        cwd=project_copy, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert result.returncode == 1
    assert f"setup: creating .venv failed; full output in {log}" in result.stderr
    assert "### creating .venv: false -m venv .venv" in log.read_text()


def test_run_local_without_its_python_fails_in_one_line(project_copy: Path, tmp_path: Path) -> None:
    env = base_env(PEQUEROKU_PYTHON=str(tmp_path / "missing"), PEQUEROKU_IMAGE_DIR=str(tmp_path))

    result = subprocess.run(
        ["bash", "scripts/run-local.sh", "--no-setup", "--state-dir", str(tmp_path / "state")],
        cwd=project_copy, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"run-local: {tmp_path / 'missing'} is missing; run without --no-setup once "
        "(or set PEQUEROKU_PYTHON)"
    ]


@pytest.mark.vm  # starts the real node agent (no guest boots)
def test_ctrl_c_under_make_stops_cleanly_without_a_make_error(project_copy: Path) -> None:
    if not (IMAGE_DIR / "default" / "rootfs.qcow2").exists():
        pytest.skip(f"the guest image is not built in {IMAGE_DIR}")
    env = base_env(
        PEQUEROKU_NO_SETUP="1",
        PEQUEROKU_PYTHON=sys.executable,
        PEQUEROKU_IMAGE_DIR=str(IMAGE_DIR),
        PEQUEROKU_PORT=str(free_port()),
        PEQUEROKU_AGENT_PORT=str(free_port()),
        PEQUEROKU_STATE_DIR=str(project_copy / ".local"),
    )
    # A terminal's Ctrl-C goes to the whole foreground group: make and the script.
    make = subprocess.Popen(
        ["make", "run"], cwd=project_copy, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    seen: list[str] = []
    try:
        assert make.stdout is not None
        for line in make.stdout:
            seen.append(line)
            if line.startswith("  Ctrl-C stops everything."):
                break
        os.killpg(make.pid, signal.SIGINT)
        seen.append(make.stdout.read())
        make.wait(timeout=120)
    finally:
        if make.poll() is None:
            stop_group(make)
        if make.stdout is not None:
            make.stdout.close()
    output = "".join(seen)

    assert re.search(r"^  admin user created: username 'admin' password '[^']+'", output, re.M)
    assert output.rstrip().endswith("run-local: stopped"), output
    assert "make: ***" not in output
    assert "Traceback" not in output
