"""Reconcile pass cost with the in-memory node driver, on a throwaway SQLite database.

    .venv/bin/python bench/reconcile.py [--containers 10000] [--small 1000] [--nodes 100]
                                        [--placements 1000] [--repeat 3] [--db FILE]

Prints:
- the no-op pass (everything already converged) over ``--small`` and ``--containers``
  containers on ``--nodes`` nodes, best of ``--repeat``;
- placing ``--placements`` new, unplaced containers (schedule, create, start, record);
- the per-container cost ratio of the no-op pass, large versus small (target <= 1.2).
The database is a fresh SQLite file (deleted afterwards) unless ``--db`` names one.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def setup_django(db_path: Path) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "pequeroku.settings_test"
    import django
    from django.conf import settings

    django.setup()
    settings.DATABASES["default"]["NAME"] = str(db_path)
    settings.DATABASES["default"]["TEST"] = {"NAME": str(db_path)}
    from django.core.management import call_command
    from django.db import connections

    connections.close_all()
    call_command("migrate", verbosity=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=10_000)
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--placements", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--db", type=Path)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="pequeroku-bench-") as tmp:
        setup_django(args.db or Path(tmp) / "bench.sqlite3")
        run(args)


def run(args: argparse.Namespace) -> None:
    from django.contrib.auth.models import User
    from django.utils import timezone

    from vm_manager.drivers.memory import InMemoryNodeDriver
    from vm_manager.models import Container, ContainerType, Node
    from vm_manager.reconciler import reconcile_once

    InMemoryNodeDriver.reset()
    user = User.objects.create_user("bench")
    small = ContainerType.objects.get(container_type_name="small")
    nodes = Node.objects.bulk_create(
        Node(
            name=f"bench-{i:03d}",
            address="127.0.0.1",
            auth_token="bench-token",  # noqa: S106
            healthy=True,
            heartbeat_at=timezone.now(),
        )
        for i in range(args.nodes)
    )
    for node in nodes:
        InMemoryNodeDriver.set_capacity(node.name, vcpus=100_000, mem_mb=1 << 30)
        InMemoryNodeDriver.set_disk(node.name, capacity_mb=1 << 40, free_mb=1 << 40)

    def add(count: int, placed: bool) -> None:
        start = Container.objects.count()
        Container.objects.bulk_create(
            (
                Container(
                    user=user,
                    container_type=small,
                    node=nodes[(start + i) % len(nodes)] if placed else None,
                    name=f"bench-{start + i}",
                )
                for i in range(count)
            ),
            batch_size=2_000,
        )

    def noop_seconds(expected: int) -> float:
        best = float("inf")
        for _ in range(args.repeat):
            report = reconcile_once()
            assert report.examined == expected, report.summary()
            assert report.created == report.started == report.errors == 0, report.summary()
            best = min(best, report.seconds)
        return best

    try:
        add(args.small, placed=True)
        converge = reconcile_once()
        print(f"converge {args.small} (create+start on their nodes): {converge.summary()}")
        small_noop = noop_seconds(args.small)
        print(f"no-op pass, {args.small} containers on {args.nodes} nodes: {small_noop:.3f}s")

        add(args.placements, placed=False)
        placing = reconcile_once()
        assert placing.created == args.placements, placing.summary()
        unplaced = Container.objects.filter(node__isnull=True).count()
        print(
            f"placing {args.placements} new containers: {placing.seconds:.3f}s "
            f"({placing.summary()}, left unplaced: {unplaced})"
        )

        add(args.containers - Container.objects.count(), placed=True)
        converge = reconcile_once()
        print(f"converge up to {args.containers}: {converge.summary()}")
        large_noop = noop_seconds(args.containers)
        print(f"no-op pass, {args.containers} containers on {args.nodes} nodes: {large_noop:.3f}s")

        ratio = (large_noop / args.containers) / (small_noop / args.small)
        verdict = "ok" if ratio <= 1.2 else "above target"
        print(
            f"per-container cost: {small_noop / args.small * 1e6:.1f}us at {args.small}, "
            f"{large_noop / args.containers * 1e6:.1f}us at {args.containers}; "
            f"ratio {ratio:.2f} (target <= 1.2: {verdict})"
        )
    finally:
        InMemoryNodeDriver.reset()


if __name__ == "__main__":
    main()
