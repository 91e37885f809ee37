"""App configs of the project package itself."""

from __future__ import annotations

from django.contrib.admin.apps import AdminConfig as DjangoAdminConfig


class AdminConfig(DjangoAdminConfig):
    """``django.contrib.admin`` with ``pequeroku.admin.PequerokuAdminSite`` as ``admin.site``."""

    default_site = "pequeroku.admin.PequerokuAdminSite"
