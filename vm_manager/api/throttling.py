"""What the login audit reads from a login request."""

from __future__ import annotations

from rest_framework.exceptions import APIException
from rest_framework.request import Request


def login_username(request: Request) -> str:
    """The username a login request names, as given (``""`` when the body has none or cannot
    be parsed: the audit row of a refused login must not fail on its body)."""
    try:
        data = request.data
    except APIException:
        return ""
    return str(data.get("username", ""))[:150] if isinstance(data, dict) else ""
