"""The spec's test command works with the virtualenv outside the checkout (where Poetry puts
it by default): the deploy tests run their scripts with the interpreter running the tests."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.deploy import base_env


def virtualenv_outside(target: Path) -> Path:
    """A virtualenv at ``target`` holding the packages of the one running this test, without
    reinstalling them: pyvenv.cfg, the base interpreter and the same lib/ directory."""
    (target / "bin").mkdir(parents=True)
    shutil.copy(Path(sys.prefix) / "pyvenv.cfg", target / "pyvenv.cfg")
    base_python = Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}"
    for name in ("python", "python3"):
        (target / "bin" / name).symlink_to(base_python)
    (target / "lib").symlink_to(Path(sys.prefix) / "lib")
    return target / "bin"


def test_the_deploy_tests_pass_with_a_virtualenv_outside_the_checkout(
    project_copy: Path, tmp_path: Path
) -> None:
    assert not (project_copy / ".venv").exists()
    venv_bin = virtualenv_outside(tmp_path / "outside-venv")
    env = base_env(PATH=f"{venv_bin}:/usr/bin:/bin", VIRTUAL_ENV=str(venv_bin.parent))
    env.pop("PYTHONPATH", None)

    result = subprocess.run(
        [str(venv_bin / "python"), "-m", "pytest", "tests/deploy/test_check_deploy.py",
         "-q", "-p", "no:cacheprovider"],
        cwd=project_copy, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip

    assert result.returncode == 0, result.stdout[-3000:]
    assert "2 passed" in result.stdout
