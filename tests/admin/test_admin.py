import pytest
from django.urls import reverse

from internal_config.models import AIUsageLog, AuditLog, Config
from vm_manager.models import Container, ContainerType, Node, ResourceQuota
from vm_manager.reconciler import reconcile_requested

CHANGELISTS = [
    "vm_manager_containertype",
    "vm_manager_resourcequota",
    "vm_manager_container",
    "vm_manager_node",
    "vm_manager_filetemplate",
    "vm_manager_team",
    "vm_manager_teammembership",
    "internal_config_config",
    "internal_config_auditlog",
    "internal_config_aiusagelog",
    "internal_config_aimemory",
]


@pytest.mark.parametrize("name", CHANGELISTS)
def test_every_model_has_a_working_admin_changelist(admin_client, user, node, make_container, name):
    make_container(user, node=node)

    response = admin_client.get(reverse(f"admin:{name}_changelist") + "?q=a")

    assert response.status_code == 200


def test_audit_log_admin_is_read_only(admin_client, user):
    row = AuditLog.objects.create(user=user, action="login")

    assert admin_client.get(reverse("admin:internal_config_auditlog_add")).status_code == 403
    delete_url = reverse("admin:internal_config_auditlog_delete", args=[row.pk])
    assert admin_client.post(delete_url, {"post": "yes"}).status_code == 403
    change = admin_client.get(reverse("admin:internal_config_auditlog_change", args=[row.pk]))
    assert b'name="action"' not in change.content
    assert AuditLog.objects.filter(pk=row.pk).exists()


def test_ai_usage_list_shows_only_total_cost(admin_client, user):
    AIUsageLog.objects.create(user=user, query="q", prompt_tokens=1000, completion_tokens=1000)

    response = admin_client.get(reverse("admin:internal_config_aiusagelog_changelist"))

    content = response.content.decode()
    assert "total cost" in content.lower()
    assert "0.00090000" in content
    assert "cost input" not in content.lower()


def test_ai_usage_change_view_shows_read_only_cost_breakdown(admin_client, user):
    log = AIUsageLog.objects.create(
        user=user, query="q", prompt_tokens=1000, completion_tokens=1000
    )

    response = admin_client.get(reverse("admin:internal_config_aiusagelog_change", args=[log.pk]))

    content = response.content.decode()
    for label, value in (("Cost input", "0.00015000"), ("Cost output", "0.00075000")):
        assert label in content
        assert value in content
    assert "0.00090000" in content
    assert 'name="prompt_tokens"' not in content


def test_config_admin_never_shows_the_api_key(admin_client, db):
    Config.objects.filter(name="openai_api_key").update(value="sk-very-secret")
    key = Config.objects.get(name="openai_api_key")

    listing = admin_client.get(reverse("admin:internal_config_config_changelist"))
    change = admin_client.get(reverse("admin:internal_config_config_change", args=[key.pk]))

    assert b"sk-very-secret" not in listing.content
    assert b"sk-very-secret" not in change.content


def test_config_admin_keeps_the_api_key_when_left_blank(admin_client, db):
    Config.objects.filter(name="openai_api_key").update(value="sk-very-secret")
    key = Config.objects.get(name="openai_api_key")
    url = reverse("admin:internal_config_config_change", args=[key.pk])

    admin_client.post(url, {"name": key.name, "value": "", "description": key.description})

    assert Config.get_config_value("openai_api_key") == "sk-very-secret"


def test_node_admin_never_renders_the_agent_token(admin_client, node):
    response = admin_client.get(reverse("admin:vm_manager_node_change", args=[node.pk]))

    assert node.auth_token.encode() not in response.content


def test_container_admin_power_off_sets_desired_state_and_requests_reconcile(
    admin_client, user, make_container, django_capture_on_commit_callbacks
):
    container = make_container(user)
    requested = []

    def listen(sender, container_ids, **kwargs):
        requested.append(container_ids)

    reconcile_requested.connect(listen)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            admin_client.post(
                reverse("admin:vm_manager_container_changelist"),
                {"action": "power_off", "index": 0, "_selected_action": [container.pk]},
            )
    finally:
        reconcile_requested.disconnect(listen)

    container.refresh_from_db()
    assert container.desired_state == "stopped"
    assert [container.pk] in requested


def test_container_admin_power_on_reports_missing_credits(admin_client, user, make_container):
    container = make_container(user, desired_state="stopped")
    ResourceQuota.objects.filter(user=user).update(credits=0)

    response = admin_client.post(
        reverse("admin:vm_manager_container_changelist"),
        {"action": "power_on", "index": 0, "_selected_action": [container.pk]},
        follow=True,
    )

    assert "you have 0 left" in response.content.decode()
    container.refresh_from_db()
    assert container.desired_state == "stopped"


def test_quota_admin_shows_credits_used(admin_client, user, make_container):
    make_container(user, container_type=ContainerType.objects.get(container_type_name="medium"))

    response = admin_client.get(reverse("admin:vm_manager_resourcequota_changelist"))

    assert response.context["cl"].result_list.get(user=user).used == 2


def test_quota_admin_deactivate_action_stops_containers(admin_client, user, make_container):
    container = make_container(user)

    admin_client.post(
        reverse("admin:vm_manager_resourcequota_changelist"),
        {"action": "deactivate", "index": 0, "_selected_action": [user.quota.pk]},
    )

    container.refresh_from_db()
    assert container.desired_state == Container.DesiredState.STOPPED


def node_form(node: Node, **changes: object) -> dict[str, object]:
    """The node's change form as posted, the token left blank unless given."""
    data = {
        "name": node.name,
        "address": node.address,
        "port": node.port,
        "use_tls": "on" if node.use_tls else "",
        "auth_token": "",
        "arch": node.arch,
        "kvm_available": "on" if node.kvm_available else "",
        "capacity_vcpus": node.capacity_vcpus,
        "capacity_mem_mb": node.capacity_mem_mb,
        "cpu_allocation_ratio": node.cpu_allocation_ratio,
        "ram_allocation_ratio": node.ram_allocation_ratio,
        "disk_allocation_ratio": node.disk_allocation_ratio,
        "healthy": "on" if node.healthy else "",
        "active": "on" if node.active else "",
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v != ""} | {"auth_token": data["auth_token"]}


def test_pointing_a_node_elsewhere_with_its_token_entered_again_works(staff_with, node):
    client = staff_with("view_node", "change_node")
    url = reverse("admin:vm_manager_node_change", args=[node.pk])

    response = client.post(
        url, node_form(node, address="10.0.0.9", auth_token="new-token-of-that-host")
    )

    assert response.status_code == 302
    node.refresh_from_db()
    assert (node.address, node.auth_token) == ("10.0.0.9", "new-token-of-that-host")
