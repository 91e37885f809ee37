"""Revision numbers: compare-and-bump semantics of the process-local store."""

from __future__ import annotations

from channels.layers import InMemoryChannelLayer

from vm_manager.guest.revisions import LocalRevisionStore, revision_store


def test_the_in_memory_layer_keeps_revisions_in_the_process():
    assert isinstance(revision_store(InMemoryChannelLayer()), LocalRevisionStore)


async def test_an_unchanged_path_is_at_revision_zero():
    assert await LocalRevisionStore().get(1, "/app/a") == 0


async def test_bump_increments_per_container_and_path():
    store = LocalRevisionStore()
    assert await store.bump(1, "/app/a") == 1
    assert await store.bump(1, "/app/a") == 2
    assert await store.bump(1, "/app/b") == 1
    assert await store.bump(2, "/app/a") == 1
    assert await store.get(1, "/app/a") == 2


async def test_bump_with_a_stale_expected_revision_changes_nothing():
    store = LocalRevisionStore()
    await store.bump(1, "/app/a")
    assert await store.bump(1, "/app/a", expected=0) is None
    assert await store.get(1, "/app/a") == 1
    assert await store.bump(1, "/app/a", expected=1) == 2


async def test_every_store_of_the_process_agrees():
    await LocalRevisionStore().bump(7, "/app/x")
    assert await LocalRevisionStore().get(7, "/app/x") == 1
