"""``/``: what this server is, where its admin and API docs are, and, for a logged-in user,
the containers they can open with their state."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe

from vm_manager.selectors import container_rows_for_user

SHOWN_CONTAINERS = 50


@require_safe
def landing(request: HttpRequest) -> HttpResponse:
    containers: list[dict[str, object]] = []
    total = 0
    if request.user.is_authenticated:
        rows = container_rows_for_user(request.user)
        containers = list(rows[:SHOWN_CONTAINERS])
        total = len(containers) if len(containers) < SHOWN_CONTAINERS else rows.count()
    return render(
        request,
        "pequeroku/landing.html",
        {"containers": containers, "total": total, "shown": SHOWN_CONTAINERS},
    )
