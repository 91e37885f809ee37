import pytest

from vm_manager.models import Container, node_score


def test_node_used_resources_sum_containers_meant_to_run(user, node, make_container):
    make_container(user, node=node)
    make_container(user, node=node, desired_state=Container.DesiredState.STOPPED)

    assert node.get_used_resources() == {"vcpus": 1, "mem_mb": 1024, "containers": 1}


def test_node_free_resources_are_capacity_minus_used(user, node, make_container):
    make_container(user, node=node)

    assert node.get_free_resources() == {"vcpus": 7, "mem_mb": 15360, "containers": 1}


def test_node_score_is_two_mem_plus_vcpus_minus_half_running(user, node, make_container):
    make_container(user, node=node)

    assert node.get_node_score() == pytest.approx(2.0 * 15360 + 1.0 * 7 - 0.5 * 1)


def test_node_score_formula():
    assert node_score(free_mem_mb=100, free_vcpus=3, running_containers=4) == 201.0


def test_node_agent_url_brackets_ipv6(make_node):
    assert make_node(address="::1", port=9000).agent_url == "http://[::1]:9000"
    assert make_node(address="n1.example", use_tls=True).agent_url == "https://n1.example:8081"
