"""``manage.py register_node NAME --url URL (--token T | --token-file F)``: add or update a node,
then probe its agent once. The token is never printed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from pequeroku.errors import DomainError
from vm_manager.nodes import node_heartbeat
from vm_manager.placement import placement_refusals
from vm_manager.services import node_register


class Command(BaseCommand):
    help = "Register a node agent (or update its URL and token) and check its health."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--url", required=True, help="The agent, e.g. http://10.0.0.5:8081")
        token = parser.add_mutually_exclusive_group(required=True)
        token.add_argument("--token", help="Bearer token of the agent.")
        token.add_argument("--token-file", type=Path, help="File holding the token.")
        parser.add_argument("--arch", help="Expected architecture (the probe overrides it).")
        parser.add_argument("--no-probe", action="store_true", help="Do not contact the agent now.")

    def handle(self, *args: Any, **options: Any) -> None:
        token = options["token"]
        if options["token_file"] is not None:
            try:
                token = options["token_file"].read_text().strip()
            except OSError as exc:
                raise CommandError(f"cannot read the token file: {exc.strerror}") from None
        try:
            node = node_register(
                options["name"], url=options["url"], token=token or "", arch=options["arch"]
            )
        except DomainError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(f"node {node.name} registered at {node.agent_url}")
        if options["no_probe"]:
            return
        report = node_heartbeat([node])
        if node.name in report.healthy:
            node.refresh_from_db()
            self.stdout.write(
                f"node {node.name} healthy: arch={node.arch} kvm={node.kvm_available} "
                f"vcpus={node.capacity_vcpus} mem_mb={node.capacity_mem_mb} "
                f"free_disk_mb={node.free_disk_mb} guest_isolation={node.guest_isolation}"
            )
            for reason in placement_refusals(node):
                self.stderr.write(f"node {node.name} gets no new containers: {reason}")
        else:
            self.stderr.write(f"node {node.name} unhealthy: {report.unhealthy[node.name]}")
