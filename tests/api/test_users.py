"""login / logout / me and the container types list."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.test import Client
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from internal_config.models import AIUsageLog, AuditLog
from vm_manager.models import ContainerType, ResourceQuota, utc_day_start

QUOTA_FIELDS = {
    "credits",
    "credits_left",
    "ai_use_per_day",
    "ai_uses_left_today",
    "active",
    "allowed_types",
}
TYPE_FIELDS = {"id", "container_type_name", "memory_mb", "vcpus", "disk_gib", "credits_cost"}


def login(client: APIClient, username: str, password: str, **extra):
    return client.post(
        "/api/user/login/", {"username": username, "password": password}, format="json", **extra
    )


def test_login_sets_a_session_without_a_csrf_token(user, password):
    client = APIClient(enforce_csrf_checks=True)

    response = login(client, "alice", password)

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "sessionid" in response.cookies
    assert client.get("/api/user/me/").json()["username"] == "alice"
    row = AuditLog.objects.get(action="login")
    assert row.success and row.user == user


def test_login_with_a_wrong_password_is_400_and_audited(user):
    response = login(APIClient(), "alice", "wrong")

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_credentials"
    row = AuditLog.objects.get(action="login")
    assert not row.success
    assert row.metadata == {"username": "alice"}
    assert "wrong" not in row.message


def test_login_of_an_inactive_user_is_400(make_user, password):
    make_user("gone", is_active=False)

    assert login(APIClient(), "gone", password).status_code == 400


def test_login_with_a_malformed_body_is_400(db):
    response = APIClient().post("/api/user/login/", {"username": "x"}, format="json")

    assert response.status_code == 400
    assert "password" in response.json()["errors"]


def test_login_is_throttled_per_ip_and_username(user, password):
    client = APIClient()
    statuses = [login(client, "alice", "wrong").status_code for _ in range(10)]

    throttled = login(client, "alice", password)

    assert statuses == [400] * 10
    assert throttled.status_code == 429
    assert throttled.json()["code"] == "throttled"
    assert AuditLog.objects.filter(action="login", success=False).count() == 11
    assert AuditLog.objects.filter(action="login", message__startswith="throttled").count() == 1


def test_login_throttle_is_separate_for_another_username(user, other_user, password):
    client = APIClient()
    for _ in range(10):
        login(client, "alice", "wrong")

    assert login(client, "bob", password).status_code == 200


def test_login_failures_of_one_username_count_from_every_address(user, password):
    client = APIClient()
    for number in range(10):
        login(client, "alice", "wrong", REMOTE_ADDR=f"10.0.0.{number + 1}")

    refused = login(client, "alice", password, REMOTE_ADDR="10.0.1.1")

    assert refused.status_code == 429
    assert int(refused["Retry-After"]) > 0


def test_login_failures_from_one_address_count_for_every_username(user, password, settings):
    settings.LOGIN_FAILURES_PER_IP = 5
    client = APIClient()
    for number in range(5):
        login(client, f"guess{number}", "wrong", REMOTE_ADDR="10.0.0.1")

    assert login(client, "alice", password, REMOTE_ADDR="10.0.0.1").status_code == 429
    assert login(client, "alice", password, REMOTE_ADDR="10.0.0.2").status_code == 200


def test_a_failed_admin_login_costs_one_password_hash(user, hasher_calls):
    response = Client().post("/admin/login/", {"username": "alice", "password": "wrong"})

    assert response.status_code == 200
    assert hasher_calls() == 1
    assert AuditLog.objects.filter(action="login", success=False).count() == 1


def test_a_failed_api_login_costs_one_password_hash(user, hasher_calls):
    response = APIClient().post(
        "/api/user/login/", {"username": "alice", "password": "wrong"}, format="json"
    )

    assert response.status_code == 400
    assert hasher_calls() == 1


@pytest.mark.parametrize(
    "origin", ["http://testserver", "http://localhost:5173"], ids=["own", "allowed-host"]
)
def test_the_frontends_same_origin_json_login_still_works(user, password, origin, settings):
    settings.ALLOWED_HOSTS = ["testserver", "localhost"]
    client = APIClient(enforce_csrf_checks=True)

    response = client.post(
        "/api/user/login/",
        {"username": "alice", "password": password},
        format="json",
        HTTP_ORIGIN=origin,
    )

    assert response.status_code == 200
    assert "sessionid" in response.cookies


def test_a_login_from_a_csrf_trusted_origin_works(user, password, settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://*.example.com"]

    response = APIClient().post(
        "/api/user/login/",
        urlencode({"username": "alice", "password": password}),
        content_type="application/x-www-form-urlencoded",
        HTTP_ORIGIN="https://ide.example.com",
    )

    assert response.status_code == 200


def test_logout_ends_the_session(user, password):
    client = APIClient()
    login(client, "alice", password)

    response = client.post("/api/user/logout/")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert client.get("/api/user/me/").status_code == 403
    assert AuditLog.objects.get(action="logout").success


def test_logout_with_a_session_needs_the_csrf_token(user, password):
    client = APIClient(enforce_csrf_checks=True)
    login(client, "alice", password)

    refused = client.post("/api/user/logout/")
    token = client.get("/api/user/me/").cookies.get("csrftoken") or client.cookies["csrftoken"]
    accepted = client.post("/api/user/logout/", HTTP_X_CSRFTOKEN=token.value)

    assert refused.status_code == 403
    assert accepted.status_code == 200


def test_logout_anonymous_is_403(db):
    assert APIClient().post("/api/user/logout/").status_code == 403


def test_http_basic_works_for_scripts(user, password):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Basic " + _basic("alice", password))

    assert client.get("/api/containers/").status_code == 200


def _basic(username: str, password: str) -> str:
    import base64

    return base64.b64encode(f"{username}:{password}".encode()).decode()


def test_me_shows_the_user_and_quota(api_client, user, make_container, container_type):
    make_container(user)
    make_container(user, desired_state="stopped")

    response = api_client.get("/api/user/me/")

    assert response.status_code == 200
    me = response.json()
    assert set(me) == {"username", "active_containers", "has_quota", "is_superuser", "quota"}
    assert me["username"] == "alice"
    assert me["active_containers"] == 1
    assert me["has_quota"] is True
    assert me["is_superuser"] is False
    assert set(me["quota"]) == QUOTA_FIELDS
    assert me["quota"]["credits"] == 3
    assert me["quota"]["credits_left"] == 2
    assert me["quota"]["ai_uses_left_today"] == me["quota"]["ai_use_per_day"]
    assert set(me["quota"]["allowed_types"][0]) == TYPE_FIELDS
    assert AuditLog.objects.get(action="user.info").success


def test_me_counts_only_todays_ai_uses(api_client, user):
    AIUsageLog.objects.create(user=user, query="today")
    yesterday = AIUsageLog.objects.create(user=user, query="yesterday")
    AIUsageLog.objects.filter(pk=yesterday.pk).update(
        created_at=utc_day_start() - timedelta(seconds=1)
    )

    quota = api_client.get("/api/user/me/").json()["quota"]

    assert quota["ai_uses_left_today"] == quota["ai_use_per_day"] - 1


def test_me_never_shows_fewer_than_zero_ai_uses_left(api_client, user):
    ResourceQuota.objects.filter(user=user).update(ai_use_per_day=1)
    for _ in range(3):
        AIUsageLog.objects.create(user=user, query="q")

    assert api_client.get("/api/user/me/").json()["quota"]["ai_uses_left_today"] == 0


def test_me_reads_in_the_same_queries_whatever_the_user_holds(
    api_client, user, make_container, container_type, django_assert_num_queries
):
    # session, user, the held containers' aggregate, the quota with today's AI uses, its
    # types; then the audit row (written in the request under the test settings)
    with django_assert_num_queries(6):
        api_client.get("/api/user/me/")
    for _ in range(3):
        make_container(user)
        AIUsageLog.objects.create(user=user, query="q")
    ResourceQuota.objects.get(user=user).allowed_types.add(
        ContainerType.objects.create(
            container_type_name="big", memory_mb=2048, vcpus=2, disk_gib=10
        )
    )

    with django_assert_num_queries(6):
        me = api_client.get("/api/user/me/").json()

    assert me["active_containers"] == 3
    assert len(me["quota"]["allowed_types"]) == ContainerType.objects.filter(private=False).count()


def test_me_without_a_quota(api_client, user):
    ResourceQuota.objects.filter(user=user).delete()

    me = api_client.get("/api/user/me/").json()

    assert me["has_quota"] is False
    assert me["quota"] is None


def test_me_anonymous_is_403(db):
    response = APIClient().get("/api/user/me/")

    assert response.status_code == 403
    assert response.json()["code"] == "not_authenticated"


def test_container_types_are_those_the_quota_allows(api_client, user):
    gpu = ContainerType.objects.create(
        container_type_name="gpu", memory_mb=8192, vcpus=4, disk_gib=40, private=True
    )
    user.quota.allowed_types.remove(ContainerType.objects.get(container_type_name="large"))

    response = api_client.get("/api/container-types/")

    assert response.status_code == 200
    names = [t["container_type_name"] for t in response.json()]
    assert names == ["small", "medium"]
    assert gpu.container_type_name not in names
    assert set(response.json()[0]) == TYPE_FIELDS


def test_container_types_honour_limit(api_client):
    response = api_client.get("/api/container-types/?limit=1&offset=1")

    assert [t["container_type_name"] for t in response.json()] == ["medium"]


def test_container_types_anonymous_is_403(db):
    assert APIClient().get("/api/container-types/").status_code == 403


def test_the_api_as_a_whole_is_throttled(api_client, monkeypatch):
    rates = {"anon": "2/min", "user": "3/min"}
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", rates)

    statuses = [api_client.get("/api/container-types/").status_code for _ in range(4)]

    assert statuses == [200, 200, 200, 429]


@pytest.mark.parametrize("path", ["/api/schema/", "/api/schema/swagger-ui/", "/api/schema/redoc/"])
def test_schema_and_its_uis_are_served_to_logged_in_users(api_client, path):
    assert api_client.get(path).status_code == 200
