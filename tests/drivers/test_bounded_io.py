"""Bounded node I/O: reads ask the node for at most N bytes, listings for at most N entries.

The in-memory node and the HTTP driver keep the same contract (the agent's side is in
``tests/node_agent/test_vm_agent.py``): ``read_file(max_bytes=N)`` is the whole file or
``GuestFileTooLarge``; ``list_dir(limit=N)`` at most N entries; ``read_file_stream`` chunks.
"""

from __future__ import annotations

import httpx
import pytest

from vm_manager.drivers.base import GuestFileNotFound, GuestFileTooLarge
from vm_manager.drivers.http import HttpNodeDriver
from vm_manager.drivers.memory import InMemoryNodeDriver

SPEC = {"vm_id": "vm1", "vcpus": 1, "memory_mb": 512, "disk_gib": 1, "image": "default"}


@pytest.fixture
async def running():
    driver = InMemoryNodeDriver("bounded")
    await driver.vm_create(SPEC)
    await driver.vm_start("vm1")
    return driver


async def test_a_read_within_the_bound_is_the_whole_file(running):
    await running.write_file("vm1", "/app/ten.bin", b"0123456789")

    assert await running.read_file("vm1", "/app/ten.bin", max_bytes=10) == b"0123456789"


async def test_a_read_over_the_bound_is_refused_not_cut(running):
    await running.write_file("vm1", "/app/ten.bin", b"0123456789")

    with pytest.raises(GuestFileTooLarge):
        await running.read_file("vm1", "/app/ten.bin", max_bytes=9)


async def test_a_listing_is_capped_at_the_limit(running):
    for index in range(12):
        await running.write_file("vm1", f"/app/many/f{index:02}", b"")

    assert len(await running.list_dir("vm1", "/app/many", limit=5)) == 5
    assert len(await running.list_dir("vm1", "/app/many")) == 12


async def test_a_file_streams_in_chunks_and_a_missing_one_fails_first(running):
    await running.write_file("vm1", "/app/big.bin", b"x" * 200_000)

    chunks = [chunk async for chunk in running.read_file_stream("vm1", "/app/big.bin")]

    assert sum(map(len, chunks)) == 200_000 and len(chunks) > 1
    with pytest.raises(GuestFileNotFound):
        [chunk async for chunk in running.read_file_stream("vm1", "/app/nope")]


def http_driver(monkeypatch, handler) -> HttpNodeDriver:
    driver = HttpNodeDriver("http://node.invalid:8443", "token")

    def client(timeout: float | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=driver.base_url, transport=httpx.MockTransport(handler))

    monkeypatch.setattr(driver, "_client", client)
    return driver


async def test_the_http_driver_asks_the_agent_for_at_most_n_bytes_and_entries(monkeypatch):
    seen: list[httpx.QueryParams] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.params)
        if request.url.path.endswith("/content"):
            return httpx.Response(200, content=b"abc")
        return httpx.Response(200, json=[])

    driver = http_driver(monkeypatch, handler)
    await driver.read_file("vm1", "/app/a", max_bytes=100)
    await driver.list_dir("vm1", "/app", limit=50)

    assert seen[0]["max_bytes"] == "100"
    assert seen[1]["limit"] == "50"


async def test_the_agents_file_too_large_is_guest_file_too_large(monkeypatch):
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(413, json={"detail": "too big", "code": "file_too_large"})

    driver = http_driver(monkeypatch, handler)

    with pytest.raises(GuestFileTooLarge):
        await driver.read_file("vm1", "/app/a", max_bytes=1)
