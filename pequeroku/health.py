"""Liveness and readiness endpoints."""

urlpatterns: list = []
