"""M7 (request bodies): an anonymous client cannot make the server read a huge body."""

from __future__ import annotations

import pytest

from pequeroku.asgi import application
from tests.asgi_http import asgi_post, body_chunks

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

MIB = 1024 * 1024


async def test_a_huge_declared_login_body_is_refused_without_reading_it(settings):
    size = 16 * MIB

    result = await asgi_post(
        application, "/api/user/login/", body_chunks(size), content_length=size
    )

    assert result.status == 413
    assert result.json()["code"] == "request_too_large"
    assert result.bytes_read == 0


async def test_a_huge_chunked_login_body_is_cut_off_at_the_limit(settings):
    settings.MAX_REQUEST_BYTES = MIB

    result = await asgi_post(
        application, "/api/user/login/", body_chunks(16 * MIB), content_length=None
    )

    assert result.status == 413
    assert result.bytes_read <= MIB + 64 * 1024


async def test_a_huge_anonymous_upload_is_refused_without_reading_it(settings):
    settings.MAX_UPLOAD_BYTES = MIB
    size = 16 * MIB

    result = await asgi_post(
        application,
        "/api/containers/1/upload_file/",
        body_chunks(size),
        content_length=size,
        content_type=b"multipart/form-data; boundary=x",
    )

    assert result.status == 413
    assert result.json()["code"] == "file_too_large"
    assert result.bytes_read == 0
