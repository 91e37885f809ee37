"""The ASGI body limit lets ordinary requests through untouched."""

from __future__ import annotations

import pytest

from pequeroku.asgi import application
from tests.asgi_http import asgi_post, body_chunks

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


async def test_a_body_under_the_limit_reaches_django(settings):
    body = b'{"username": "nobody", "password": "x"}'

    result = await asgi_post(application, "/api/user/login/", [body], content_length=len(body))

    assert result.status == 400  # Django read it and answered: wrong credentials
    assert result.bytes_read == len(body)


async def test_an_upload_may_be_larger_than_other_bodies(settings):
    settings.MAX_REQUEST_BYTES = 1024
    settings.MAX_UPLOAD_BYTES = 4096
    size = 3000

    result = await asgi_post(
        application,
        "/api/containers/1/upload_file/",
        body_chunks(size),
        content_length=size,
        content_type=b"multipart/form-data; boundary=x",
    )

    assert result.status == 403  # past the limit check: not logged in
    assert result.bytes_read == size


async def test_a_chunked_body_under_the_limit_is_read_whole(settings):
    body = b'{"username": "nobody", "password": "x"}'

    result = await asgi_post(
        application, "/api/user/login/", [body[:10], body[10:]], content_length=None
    )

    assert result.status == 400
    assert result.bytes_read == len(body)
