"""``manage.py login_unlock USERNAME [--ip ADDRESS]``: forget the failed logins of a username
(and of a client address), lifting a lockout before it runs out."""

from __future__ import annotations

import ipaddress
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from pequeroku.login_throttle import login_throttle_reset


class Command(BaseCommand):
    help = "Lift the login lockout of a username (and optionally of a client IP)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--ip", help="Also forget the failures counted for this address.")

    def handle(self, *args: Any, **options: Any) -> None:
        ip = options["ip"]
        if ip is not None:
            try:
                ip = str(ipaddress.ip_address(ip))
            except ValueError:
                raise CommandError(f"not an IP address: {ip!r}") from None
        login_throttle_reset(options["username"], ip)
        target = options["username"] + (f" and {ip}" if ip else "")
        self.stdout.write(f"failed logins forgotten for {target}")
