"""Short-lived helper processes (nft, qemu-img, the self-test probe), bounded in time.

Entry point: ``communicate``. Whether it finishes, times out or its caller is cancelled (the
agent shutting down), the process is killed if still running and its pipes drained, so no
process or pipe outlives the call.
"""

from __future__ import annotations

import asyncio
import contextlib


async def communicate(
    proc: asyncio.subprocess.Process, data: bytes | None = None, timeout: float = 30.0
) -> tuple[bytes, bytes]:
    """``proc.communicate(data)``; raises ``TimeoutError`` after ``timeout`` seconds."""
    inner = asyncio.ensure_future(proc.communicate(data))
    try:
        out, err = await asyncio.wait_for(asyncio.shield(inner), timeout)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(BaseException):
            await inner
        raise
    return out or b"", err or b""
