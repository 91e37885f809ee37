import pytest
from django.contrib.auth import authenticate
from django.test import Client, RequestFactory

from internal_config.audit import (
    audit_log_http,
    audit_log_ws,
    client_ip,
    redact_secrets,
    scope_client_info,
)
from internal_config.models import AuditLog


def test_audit_log_http_records_ip_user_agent_and_user(rf: RequestFactory, user):
    request = rf.post("/x", REMOTE_ADDR="203.0.113.9", HTTP_USER_AGENT="pytest-agent/1")
    request.user = user

    row = audit_log_http(
        request, action="container.create", target_type="container", target_id=7, metadata={"a": 1}
    )

    assert (row.ip, row.user_agent, row.user, row.target_id) == (
        "203.0.113.9",
        "pytest-agent/1",
        user,
        "7",
    )
    assert row.metadata == {"a": 1}
    assert row.success is True


def test_audit_log_http_ignores_forwarded_header_unless_trusted(db, rf, settings):
    request = rf.get("/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.4")

    assert audit_log_http(request, action="x").ip == "10.0.0.1"

    settings.TRUSTED_PROXY_IP_HEADER = "HTTP_X_FORWARDED_FOR"
    assert audit_log_http(request, action="x").ip == "198.51.100.4"


def test_audit_log_http_drops_an_invalid_forwarded_address(db, rf, settings):
    settings.TRUSTED_PROXY_IP_HEADER = "HTTP_X_FORWARDED_FOR"
    request = rf.get("/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="not-an-ip")

    assert audit_log_http(request, action="x").ip == "10.0.0.1"


@pytest.mark.parametrize(
    ("count", "header", "expected"),
    [
        (1, "203.0.113.66, 198.51.100.4", "198.51.100.4"),  # the client wrote the first entry
        (2, "203.0.113.66, 198.51.100.4, 10.0.0.2", "198.51.100.4"),  # two proxies appended
        (3, "198.51.100.4, 10.0.0.2", "198.51.100.4"),  # fewer hops than proxies: the first
    ],
)
def test_client_ip_is_the_right_most_untrusted_hop(db, rf, settings, count, header, expected):
    settings.TRUSTED_PROXY_IP_HEADER = "HTTP_X_FORWARDED_FOR"
    settings.TRUSTED_PROXY_COUNT = count

    assert client_ip(rf.get("/", HTTP_X_FORWARDED_FOR=header).META) == expected


def test_scope_client_info_joins_repeated_forwarded_headers(settings):
    settings.TRUSTED_PROXY_IP_HEADER = "HTTP_X_FORWARDED_FOR"
    scope = {
        "client": ["10.0.0.1", 5000],
        "headers": [(b"x-forwarded-for", b"203.0.113.66"), (b"x-forwarded-for", b"198.51.100.4")],
    }

    assert scope_client_info(scope)[0] == "198.51.100.4"


@pytest.mark.parametrize(
    ("typed", "kept"),
    [
        ("git push https://bob:hunter2@git.example/r", "git push https://bob:***@git.example/r"),
        ("curl -H 'Authorization: Bearer abc.def' x", "curl -H 'Authorization: Bearer ***' x"),
        ("DB_PASSWORD=s3cr3t ./run", "DB_PASSWORD=*** ./run"),
        ("mysql --password hunter2 -u root", "mysql --password *** -u root"),
        ("git commit -m 'rotate the token'", "git commit -m 'rotate the token'"),
        ("ls -la /app", "ls -la /app"),
    ],
)
def test_redact_secrets_hides_typed_credentials_only(typed, kept):
    assert redact_secrets(typed) == kept


def test_audit_log_ws_records_ip_user_agent_and_failure(user):
    row = audit_log_ws(
        action="ws.connect",
        user=user,
        ip="2001:db8::1",
        user_agent="browser",
        target_type="container",
        target_id=3,
        message="denied",
        success=False,
    )

    assert (row.ip, row.user_agent, row.success, row.message) == (
        "2001:db8::1",
        "browser",
        False,
        "denied",
    )


def test_scope_client_info_reads_client_and_user_agent(settings):
    scope = {
        "client": ["192.0.2.5", 5000],
        "headers": [(b"user-agent", b"ua"), (b"x-forwarded-for", b"198.51.100.7")],
    }

    assert scope_client_info(scope) == ("192.0.2.5", "ua")
    settings.TRUSTED_PROXY_IP_HEADER = "HTTP_X_FORWARDED_FOR"
    assert scope_client_info(scope) == ("198.51.100.7", "ua")


def test_audit_write_failure_never_breaks_the_caller(db):
    assert audit_log_ws(action="x", metadata={"not json": object()}) is None
    assert not AuditLog.objects.exists()


def test_login_and_logout_are_audited(user, password):
    client = Client(REMOTE_ADDR="192.0.2.1", HTTP_USER_AGENT="ua")

    assert client.login(username="alice", password=password)
    client.logout()

    assert list(AuditLog.objects.order_by("id").values_list("action", "success", "user")) == [
        ("login", True, user.pk),
        ("logout", True, user.pk),
    ]


@pytest.mark.parametrize("with_request", [True, False])
def test_failed_login_is_audited_without_the_password(db, rf, with_request):
    request = rf.post("/", REMOTE_ADDR="192.0.2.2") if with_request else None

    assert authenticate(request, username="mallory", password="guess") is None

    row = AuditLog.objects.get()
    assert (row.action, row.success, row.metadata) == ("login", False, {"username": "mallory"})
    assert "guess" not in str(row.metadata) + row.message
