"""Per-VM uids: every VM's QEMU runs under a uid of its own, never root or the agent's.

Entry points: ``UidPool`` (``claim``, ``ensure``, ``release``, ``probe_uid``), ``as_guest``.

The uids come from one range (``--vm-uid-range``); the egress policy (``node_agent.isolation``)
matches that whole range, and the range's last uid is kept for the start-up self-test. Claims
live in a directory shared by every agent of the host, one file per uid naming the VM record
that owns it, written under a lock: two agents never hand out one uid. A claim is stale, and
reused, when the record it names is gone or records another uid (test data dirs are removed
without their VMs being deleted); a claim younger than ``FRESH_CLAIM_SECONDS`` is never stale,
because its record may not be written yet.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import QemuError

FRESH_CLAIM_SECONDS = 600.0
# What a guest-uid process gets for an environment: nothing of the agent's (its token may be
# in NODE_AGENT_TOKEN).
GUEST_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}


def as_guest(uid: int, extra_groups: tuple[int, ...] = ()) -> dict[str, Any]:
    """``subprocess.Popen`` arguments that start a process as ``uid`` and nothing else."""
    if uid <= 0 or uid == os.geteuid():
        raise QemuError(f"refusing to run a guest process as uid {uid}")
    return {
        "user": uid,
        "group": uid,
        "extra_groups": list(extra_groups),
        "umask": 0o077,
        "env": dict(GUEST_ENV),
        "cwd": "/",  # not the agent's directory, which this uid may not even enter
        "close_fds": True,
    }


def parse_uid_range(text: str) -> tuple[int, int]:
    low_text, _, high_text = text.partition("-")
    try:
        low, high = int(low_text), int(high_text)
    except ValueError:
        raise ValueError(f"uid range {text!r} is not LOW-HIGH") from None
    validate_uid_range(low, high)
    return low, high


def validate_uid_range(low: int, high: int) -> None:
    if not (1000 <= low < high < 2**31):
        raise ValueError(
            f"uid range {low}-{high} must satisfy 1000 <= LOW < HIGH < 2^31 "
            "(two uids at least: VMs and the self-test)"
        )


class UidPool:
    def __init__(self, low: int, high: int, claims_dir: Path) -> None:
        validate_uid_range(low, high)
        self.low, self.high = low, high
        self.claims_dir = claims_dir

    @property
    def probe_uid(self) -> int:
        """The self-test's uid: inside the policed range, never a VM's."""
        return self.high

    def contains(self, uid: int | None) -> bool:
        return uid is not None and self.low <= uid < self.high

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.claims_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.claims_dir.chmod(0o700)
        fd = os.open(self.claims_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _claim_file(self, uid: int) -> Path:
        return self.claims_dir / str(uid)

    def _owner_of(self, uid: int) -> str | None:
        try:
            return self._claim_file(uid).read_text().strip()
        except OSError:
            return None

    def _stale(self, uid: int) -> bool:
        path = self._claim_file(uid)
        try:
            if time.time() - path.stat().st_mtime < FRESH_CLAIM_SECONDS:
                return False
            owner = Path(path.read_text().strip())
            return json.loads(owner.read_text()).get("uid") != uid
        except FileNotFoundError:
            return True
        except (OSError, ValueError, AttributeError):
            return True

    def _write_claim(self, uid: int, owner: Path) -> None:
        path = self._claim_file(uid)
        tmp = path.with_name(f".{uid}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(f"{owner}\n")
        tmp.replace(path)

    def _take(self, uid: int, owner: Path) -> bool:
        current = self._owner_of(uid)
        if current is not None and current != str(owner) and not self._stale(uid):
            return False
        self._write_claim(uid, owner)
        return True

    def claim(self, owner: Path) -> int:
        """A uid nobody else holds, claimed for the VM record at ``owner``."""
        with self._locked():
            return self._claim_locked(owner)

    def _claim_locked(self, owner: Path) -> int:
        size = self.high - self.low
        for _ in range(min(size, 256)):
            uid = self.low + random.randrange(size)  # noqa: S311 (spreading, not secrecy)
            if self._take(uid, owner):
                return uid
        for uid in range(self.low, self.high):
            if self._take(uid, owner):
                return uid
        raise QemuError(f"no free VM uid left in {self.low}-{self.high - 1}")

    def ensure(self, uid: int | None, owner: Path) -> int:
        """``uid`` if it is still this VM's (or free again), otherwise a fresh one."""
        with self._locked():
            if uid is not None and self.contains(uid) and self._take(uid, owner):
                return uid
            return self._claim_locked(owner)

    def release(self, uid: int | None, owner: Path) -> None:
        if uid is None:
            return
        with self._locked():
            if self._owner_of(uid) == str(owner):
                self._claim_file(uid).unlink(missing_ok=True)
