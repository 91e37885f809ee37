"""Lists are plain JSON arrays (what the frontend reads); ``?limit=&offset=`` slices them."""

from __future__ import annotations

from typing import Any

from rest_framework.pagination import LimitOffsetPagination
from rest_framework.response import Response


class ArrayLimitOffsetPagination(LimitOffsetPagination):
    """Without ``limit`` nothing changes; with it, a slice and an ``X-Total-Count`` header."""

    default_limit = None
    max_limit = 1000

    def get_paginated_response(self, data: Any) -> Response:
        return Response(data, headers={"X-Total-Count": str(self.count)})

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        return schema
