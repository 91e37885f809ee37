"""Under ASGI the folder archive is an async stream on the server's own event loop."""

from __future__ import annotations

import io
import zipfile

import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from django.test import AsyncClient

from tests.support.fixtures.streams import own_container_type, running

# Fixtures defined in tests.support, registered here by name.
__all__ = ["own_container_type", "running"]

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def close_view_connections():
    yield
    # Views ran in asgiref's thread for sync code; its connection would outlive the test.
    await sync_to_async(connections.close_all)()


async def test_download_folder_streams_asynchronously_under_asgi(
    user, running, close_view_connections
):
    container, root = running
    (root / "main.py").write_text("print(1)\n")
    client = AsyncClient()
    await client.aforce_login(user)

    response = await client.get(f"/api/containers/{container.pk}/download_folder/")

    assert response.status_code == 200
    assert response.is_async
    body = b"".join([chunk async for chunk in response.streaming_content])
    assert zipfile.ZipFile(io.BytesIO(body)).read("main.py") == b"print(1)\n"


async def test_download_folder_error_before_the_first_byte_is_json_under_asgi(
    user, running, close_view_connections
):
    container, _ = running
    client = AsyncClient()
    await client.aforce_login(user)

    response = await client.get(f"/api/containers/{container.pk}/download_folder/?root=/app/x")

    assert response.status_code == 404
    assert response.json()["code"] == "file_not_found"
