"""OpenAPI generation: every operation documents the errors it can answer with.

Besides what each view declares, ``ApiAutoSchema`` adds the shared ones: 401 (wrong HTTP Basic
credentials) and 403 (not logged in or not allowed), 429 (throttled), 404 on routes with a path
id, 400 and 415 (a body in another content type) where a body is read.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.authentication import BasicScheme
from drf_spectacular.openapi import AutoSchema
from rest_framework.permissions import AllowAny

from vm_manager.api.serializers import ErrorSerializer

ERROR_DESCRIPTIONS = {
    "400": "Invalid input.",
    "401": "Wrong HTTP Basic credentials.",
    "403": "Not logged in, not allowed, or refused by the quota.",
    "404": "No such object, or not visible to you.",
    "409": "The container is not running.",
    "413": "The upload is larger than the limit.",
    "415": "Unsupported request content type.",
    "429": "Too many requests.",
    "503": "No node can take it, or the node is unreachable.",
}


class ProjectBasicScheme(BasicScheme):
    """Our HTTP Basic (DRF's, answering 401) is documented as DRF's is."""

    target_class = "pequeroku.auth.BasicAuthentication"


def error_response(code: str) -> Any:
    from drf_spectacular.utils import OpenApiResponse

    return OpenApiResponse(ErrorSerializer, description=ERROR_DESCRIPTIONS[code])


class ApiAutoSchema(AutoSchema):
    def _get_response_bodies(self, direction: str = "response") -> dict[str, Any]:
        responses = super()._get_response_bodies(direction)  # type: ignore[arg-type]
        if direction != "response":
            return responses
        codes = ["429"]
        if not any(isinstance(p, AllowAny) for p in self.view.get_permissions()):
            codes += ["401", "403"]
        if "{" in self.path:
            codes.append("404")
        if self.method in ("POST", "PUT", "PATCH"):
            codes += ["400", "415"]
        for code in codes:
            if code not in responses:
                responses[code] = self._get_response_for_code(
                    error_response(code), code, direction=direction
                )
        return dict(sorted(responses.items()))
