"""``manage.py reconcile``: drive containers toward their desired state (see vm_manager.reconciler).

Exit status is non-zero only when a pass could not run at all (e.g. the database is down);
per-container failures are counted in the summary line.
"""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, close_old_connections

from vm_manager.nodes import node_heartbeat
from vm_manager.reconciler import ReconcileReport, reconcile_once


class Command(BaseCommand):
    help = "Drive every container's VM toward its desired state and record node health."

    def add_arguments(self, parser: CommandParser) -> None:
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--once", action="store_true", help="One pass (the default, for cron).")
        mode.add_argument("--loop", action="store_true", help="Pass after pass until stopped.")
        parser.add_argument("--interval", type=float, default=10.0, help="Seconds between passes.")
        parser.add_argument(
            "--container", nargs="+", type=int, metavar="ID", help="Only these containers."
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Print the plan, change nothing."
        )
        parser.add_argument(
            "--heartbeat-only", action="store_true", help="Only probe the nodes' health."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["interval"] <= 0:
            raise CommandError("--interval must be positive.")
        while True:
            self._pass(options)
            if not options["loop"]:
                return
            try:
                time.sleep(options["interval"])
            except KeyboardInterrupt:
                return
            # A long loop must replace a connection the database dropped (restart, idle timeout).
            close_old_connections()

    def _pass(self, options: dict[str, Any]) -> None:
        try:
            if options["heartbeat_only"]:
                self._heartbeat()
                return
            report = reconcile_once(options["container"], dry_run=options["dry_run"])
        except DatabaseError as exc:
            first_line = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
            message = f"reconcile could not run: database unavailable ({first_line})"
            if options["loop"]:
                self.stderr.write(message)
                return
            raise CommandError(message) from None
        self._print(report, options)

    def _heartbeat(self) -> None:
        started = time.monotonic()
        report = node_heartbeat()
        for name, error in sorted(report.unhealthy.items()):
            self.stderr.write(f"node {name} unhealthy: {error}")
        self.stdout.write(
            f"nodes healthy={len(report.healthy)} unhealthy={len(report.unhealthy)} "
            f"seconds={time.monotonic() - started:.2f}"
        )

    def _print(self, report: ReconcileReport, options: dict[str, Any]) -> None:
        verbosity = options["verbosity"]
        if options["dry_run"]:
            for line in report.plan:
                self.stdout.write(f"plan: {line}")
        if verbosity >= 2:
            for line in report.actions:
                self.stdout.write(line)
        if verbosity >= 1:
            for name, error in sorted(report.unhealthy_nodes.items()):
                self.stderr.write(f"node {name} unreachable: {error}")
            for message in report.error_messages:
                self.stderr.write(message)
        prefix = "dry-run " if options["dry_run"] else ""
        self.stdout.write(prefix + report.summary())
