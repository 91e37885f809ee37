"""Unknown paths under ``/api/`` answer like the API: JSON ``{"detail", "code"}`` 404.

Django renders a 404 for a path no route matches as HTML (the technical page with DEBUG). This
middleware sits after CommonMiddleware, so ``/api/containers`` still redirects to
``/api/containers/``; a 404 the API itself rendered (already JSON) passes untouched.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase, JsonResponse

API_PREFIX = "/api/"
NOT_FOUND = {"detail": "Not found.", "code": "not_found"}

GetResponse = Callable[[HttpRequest], Any]


def as_api_not_found(request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
    if (
        response.status_code == 404
        and request.path_info.startswith(API_PREFIX)
        and not response.get("Content-Type", "").startswith("application/json")
    ):
        return JsonResponse(NOT_FOUND, status=404)
    return response


class ApiNotFoundMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.is_async:
            return self.__acall__(request)
        return as_api_not_found(request, self.get_response(request))

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        return as_api_not_found(request, await self.get_response(request))
