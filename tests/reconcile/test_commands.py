"""``manage.py reconcile`` and ``manage.py register_node`` as an operator runs them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.support.reconcile import vm_state
from vm_manager.drivers.memory import InMemoryNodeDriver
from vm_manager.models import Container, Node

REPO = Path(__file__).resolve().parents[2]
SUMMARY = re.compile(
    r"^examined=(\d+) started=(\d+) stopped=(\d+) created=(\d+) deleted=(\d+) errors=(\d+) "
    r"seconds=\d+\.\d\d$"
)


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.mark.django_db
def test_reconcile_prints_one_summary_line(user, node, make_container):
    make_container(user, node=node)
    make_container(user, node=node, desired_state="stopped")

    out, _ = run("reconcile")

    assert SUMMARY.match(out.strip())
    assert out.startswith("examined=2 started=0 stopped=0 created=1 deleted=0 errors=0 ")


@pytest.mark.django_db
def test_per_container_failures_are_reported_not_fatal(user, node, make_container):
    container = make_container(user, node=node)
    run("reconcile")
    InMemoryNodeDriver.crash_vm("node1", container.vm_id)

    out, err = run("reconcile", "--once")

    assert " errors=1 " in out
    assert f"container {container.pk}: qemu process exited unexpectedly" in err


@pytest.mark.django_db
def test_dry_run_prints_the_plan_and_changes_nothing(user, node, make_container):
    container = make_container(user, node=node)

    out, _ = run("reconcile", "--dry-run")

    assert f"plan: container {container.pk} ({container.vm_id}) on node1: create" in out
    assert out.strip().splitlines()[-1].startswith("dry-run examined=1 ")
    assert vm_state("node1", container) is None
    assert Container.objects.get(pk=container.pk).status == "created"


@pytest.mark.django_db
def test_container_option_reconciles_only_those(user, node, make_container):
    one, two, three = (make_container(user, node=node) for _ in range(3))

    out, _ = run("reconcile", "--container", str(one.pk), str(three.pk))

    assert out.startswith("examined=2 ")
    assert [vm_state("node1", c) for c in (one, two, three)] == ["running", None, "running"]


@pytest.mark.django_db
def test_heartbeat_only_records_health_and_touches_no_container(user, node, make_container):
    container = make_container(user, node=node)
    InMemoryNodeDriver.set_capacity("node1", vcpus=32, mem_mb=65536)
    InMemoryNodeDriver.node_state("node1").kvm_available = True

    out, _ = run("reconcile", "--heartbeat-only")

    node.refresh_from_db()
    assert out.startswith("nodes healthy=1 unhealthy=0 ")
    assert (node.capacity_vcpus, node.capacity_mem_mb, node.kvm_available) == (32, 65536, True)
    assert vm_state("node1", container) is None


@pytest.mark.django_db
def test_loop_mode_rejects_a_nonpositive_interval():
    with pytest.raises(CommandError, match="interval"):
        run("reconcile", "--loop", "--interval", "0")


@pytest.mark.django_db
def test_register_node_adds_a_healthy_node_without_printing_the_token(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-node-token\n")

    out, err = run(
        "register_node", "edge-1", "--url", "https://10.0.0.5:9000", "--token-file", str(token_file)
    )

    node = Node.objects.get(name="edge-1")
    assert (node.address, node.port, node.use_tls) == ("10.0.0.5", 9000, True)
    assert node.auth_token == "s3cret-node-token"
    assert node.healthy and node.heartbeat_at is not None
    assert "s3cret" not in out + err
    assert "node edge-1 healthy: arch=x86_64" in out


@pytest.mark.django_db
def test_register_node_updates_an_existing_node_and_reports_an_unreachable_agent():
    run("register_node", "edge-1", "--url", "http://10.0.0.5:8081", "--token", "old")
    InMemoryNodeDriver.set_reachable("edge-1", False)

    _, err = run("register_node", "edge-1", "--url", "http://10.0.0.6:8081", "--token", "new")

    node = Node.objects.get(name="edge-1")
    assert (node.address, node.auth_token, node.healthy) == ("10.0.0.6", "new", False)
    assert "node edge-1 unhealthy: node edge-1 is unreachable" in err
    assert "new" not in err


@pytest.mark.django_db
def test_register_node_refuses_a_url_that_is_not_http():
    with pytest.raises(CommandError, match="http://host:port"):
        run("register_node", "edge-1", "--url", "10.0.0.5:8081", "--token", "t")


def test_an_unreachable_database_is_one_readable_line_and_a_nonzero_exit(tmp_path):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "pequeroku.settings",
        "DB_NAME": "pequeroku",
        "DB_USER": "nobody",
        "DB_HOST": "127.0.0.1",
        "DB_PORT": "1",
    }
    result = subprocess.run(
        [sys.executable, str(REPO / "manage.py"), "reconcile"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "reconcile could not run: database unavailable" in lines[0]
    assert "Traceback" not in result.stderr


def test_the_loop_reports_a_database_outage_and_keeps_going(tmp_path):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "pequeroku.settings",
        "DB_NAME": "pequeroku",
        "DB_USER": "nobody",
        "DB_HOST": "127.0.0.1",
        "DB_PORT": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "manage.py"), "reconcile", "--loop", "--interval", "0.2"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = [proc.stderr.readline() for _ in range(3)]
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        proc.stderr.close()

    assert all("reconcile could not run: database unavailable" in line for line in lines)


@pytest.mark.django_db
def test_verbosity_two_lists_each_action(user, node, make_container):
    container = make_container(user, node=node)

    out, _ = run("reconcile", "-v", "2")

    assert f"container {container.pk} ({container.vm_id}) on node1: create running ok" in out


@pytest.mark.django_db
def test_register_node_says_why_a_healthy_node_gets_no_containers(settings):
    settings.NODE_MIN_FREE_DISK_MB = 4096
    InMemoryNodeDriver.set_guest_isolation("edge-1", False)
    InMemoryNodeDriver.set_disk("edge-1", capacity_mb=10_000, free_mb=1000)

    out, err = run("register_node", "edge-1", "--url", "http://10.0.0.5:8081", "--token", "t")

    assert "free_disk_mb=1000 guest_isolation=False" in out
    assert "edge-1 gets no new containers: its agent reports the guest egress policy" in err
    assert "1000 MB free on its data disk, under the 4096 MB floor" in err
