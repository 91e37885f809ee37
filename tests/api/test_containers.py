"""Every row of the containers part of the REST contract: shapes and error statuses."""

from __future__ import annotations

import io
import tarfile
import zipfile

import pytest
from django.test import override_settings
from django.utils import timezone

from internal_config.models import AuditLog, Config
from tests.support.api import workspace
from vm_manager.models import Container, ContainerType, Node, ResourceQuota

CONTAINER_FIELDS = {
    "id",
    "name",
    "created_at",
    "status",
    "desired_state",
    "user",
    "username",
    "container_type",
    "container_type_name",
    "memory_mb",
    "vcpus",
    "disk_gib",
    "node",
    # Power-off and idle detail (additive): a suspended VM resumes with its processes.
    "suspended",
    "idle_suspended",
    "last_boot",
    "last_active_at",
}
STATS_FIELDS = {"ts", "cpu_percent", "rss_bytes", "rss_mib", "num_threads", "io"}


def audit(action: str) -> AuditLog:
    return AuditLog.objects.filter(action=action).latest("id")


def body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


# -- list, create --------------------------------------------------------------------------


def test_list_is_a_json_array_of_visible_containers(api_client, user, other_user, make_container):
    mine = make_container(user, name="mine")
    make_container(other_user, name="theirs")

    response = api_client.get("/api/containers/")

    assert response.status_code == 200
    assert isinstance(response.json(), list)
    assert [c["id"] for c in response.json()] == [mine.pk]
    assert set(response.json()[0]) == CONTAINER_FIELDS
    assert response.json()[0]["username"] == "alice"
    assert response.json()[0]["container_type_name"] == "small"


def test_list_honours_limit_and_offset(api_client, user, make_container):
    made = [make_container(user, name=f"c{i}") for i in range(5)]
    newest_first = [c.pk for c in reversed(made)]

    response = api_client.get("/api/containers/?limit=2&offset=1")

    assert [c["id"] for c in response.json()] == newest_first[1:3]
    assert response["X-Total-Count"] == "5"


def test_list_ignores_a_malformed_limit(api_client, user, make_container):
    make_container(user)

    response = api_client.get("/api/containers/?limit=abc&offset=-3")

    assert response.status_code == 200
    assert len(response.json()) == 1


def test_create_returns_201_with_the_container(
    api_client, user, node, container_type, reconcile_requests, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = api_client.post(
            "/api/containers/",
            {"container_type": container_type.pk, "container_name": "blog"},
            format="json",
        )

    assert response.status_code == 201
    assert set(response.json()) == CONTAINER_FIELDS
    assert response.json()["name"] == "blog"
    assert response.json()["desired_state"] == "running"
    assert response.json()["node"] == node.pk
    assert reconcile_requests == [[response.json()["id"]]]
    row = audit("container.create")
    assert row.success and row.target_id == str(response.json()["id"])


def test_create_without_a_name_gets_a_friendly_one(api_client, node, container_type):
    response = api_client.post(
        "/api/containers/", {"container_type": container_type.pk}, format="json"
    )

    assert response.status_code == 201
    assert response.json()["name"]


def deactivate(user, ct):
    ResourceQuota.objects.filter(pk=user.quota.pk).update(active=False)


def disallow(user, ct):
    user.quota.allowed_types.remove(ct)


def spend_all(user, ct):
    ResourceQuota.objects.filter(pk=user.quota.pk).update(credits=0)


@pytest.mark.parametrize(
    ("arrange", "code"),
    [
        (deactivate, "quota_inactive"),
        (disallow, "type_not_allowed"),
        (spend_all, "not_enough_credits"),
    ],
    ids=["inactive-quota", "type-not-allowed", "not-enough-credits"],
)
def test_create_refused_by_the_quota_is_403_with_a_code(
    api_client, user, node, container_type, arrange, code
):
    arrange(user, container_type)

    response = api_client.post(
        "/api/containers/", {"container_type": container_type.pk}, format="json"
    )

    assert response.status_code == 403
    assert response.json()["code"] == code
    assert response.json()["detail"]
    assert not Container.objects.exists()
    row = audit("container.create")
    assert not row.success and code in row.message


def test_create_with_an_unknown_type_is_400(api_client, node):
    response = api_client.post("/api/containers/", {"container_type": 99999}, format="json")

    assert response.status_code == 400
    assert response.json()["code"] == "unknown_container_type"


def test_create_with_a_malformed_body_is_400(api_client, node):
    response = api_client.post("/api/containers/", {"container_type": "big"}, format="json")

    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert "container_type" in response.json()["errors"]


def test_create_with_no_node_is_503_and_creates_nothing(api_client, container_type):
    response = api_client.post(
        "/api/containers/", {"container_type": container_type.pk}, format="json"
    )

    assert response.status_code == 503
    assert response.json()["code"] == "no_capacity"
    assert not Container.objects.exists()


def test_create_with_only_full_nodes_is_503(api_client, make_node):
    make_node("tiny", capacity_vcpus=1, capacity_mem_mb=512)
    large = ContainerType.objects.get(container_type_name="small")

    response = api_client.post("/api/containers/", {"container_type": large.pk}, format="json")

    assert response.status_code == 503


def create(client, container_type):
    return client.post("/api/containers/", {"container_type": container_type.pk}, format="json")


def test_a_kvm_only_type_created_through_the_api_never_lands_on_a_node_without_kvm(
    api_client, make_node, container_type
):
    make_node("tcg-only", kvm_available=False, capacity_vcpus=64, capacity_mem_mb=65536)
    with_kvm = make_node("with-kvm", kvm_available=True, capacity_vcpus=2, capacity_mem_mb=2048)
    ContainerType.objects.filter(pk=container_type.pk).update(requires_kvm=True)

    response = create(api_client, container_type)

    assert response.status_code == 201
    assert Container.objects.get().node == with_kvm


def test_a_kvm_only_type_is_503_when_no_node_has_kvm(api_client, make_node, container_type):
    make_node("tcg-only", kvm_available=False)
    ContainerType.objects.filter(pk=container_type.pk).update(requires_kvm=True)

    response = create(api_client, container_type)

    assert response.status_code == 503
    assert response.json()["code"] == "no_capacity"
    assert not Container.objects.exists()


def test_creating_beyond_the_per_user_cap_is_403_counting_stopped_containers(
    api_client, user, node, container_type, make_container
):
    Config.objects.update_or_create(name="max_containers_per_user", defaults={"value": "2"})
    make_container(user, node=node, desired_state="stopped")
    make_container(user, node=node, desired_state="stopped")

    response = create(api_client, container_type)

    assert response.status_code == 403
    body = response.json()
    assert body["code"] == "container_limit"
    assert "the limit is 2 per user" in body["detail"]
    assert Container.objects.count() == 2


def test_containers_being_deleted_do_not_count_toward_the_cap(
    api_client, user, node, container_type, make_container
):
    Config.objects.update_or_create(name="max_containers_per_user", defaults={"value": "1"})
    make_container(user, node=node, desired_state="stopped", deleted_at=timezone.now())

    assert create(api_client, container_type).status_code == 201


def test_a_cap_of_zero_means_no_cap(api_client, user, node, container_type, make_container):
    Config.objects.update_or_create(name="max_containers_per_user", defaults={"value": "0"})
    for _ in range(11):
        make_container(user, node=node, desired_state="stopped")

    assert create(api_client, container_type).status_code == 201


# -- detail --------------------------------------------------------------------------------


def test_retrieve_shows_the_container(api_client, running_container):
    response = api_client.get(f"/api/containers/{running_container.pk}/")

    assert response.status_code == 200
    assert response.json()["status"] == "running"
    assert set(response.json()) == CONTAINER_FIELDS


@pytest.mark.parametrize("pk", ["999999", "abc", "99999999999999999999999"])
def test_retrieve_of_a_missing_id_is_404(api_client, pk):
    response = api_client.get(f"/api/containers/{pk}/")

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_patch_renames(api_client, running_container):
    response = api_client.patch(
        f"/api/containers/{running_container.pk}/", {"name": "renamed"}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["name"] == "renamed"
    assert audit("container.update").success


def test_patch_desired_state_stopped_requests_reconcile(
    api_client, running_container, reconcile_requests, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = api_client.patch(
            f"/api/containers/{running_container.pk}/",
            {"desired_state": "stopped"},
            format="json",
        )

    assert response.json()["desired_state"] == "stopped"
    assert reconcile_requests == [[running_container.pk]]


def test_patch_desired_state_running_is_credit_checked(api_client, user, stopped_container):
    user.quota.credits = 0
    user.quota.save()

    response = api_client.patch(
        f"/api/containers/{stopped_container.pk}/", {"desired_state": "running"}, format="json"
    )

    assert response.status_code == 403
    assert response.json()["code"] == "not_enough_credits"
    stopped_container.refresh_from_db()
    assert stopped_container.desired_state == "stopped"


def test_patch_with_an_unknown_state_is_400(api_client, running_container):
    response = api_client.patch(
        f"/api/containers/{running_container.pk}/", {"desired_state": "flying"}, format="json"
    )

    assert response.status_code == 400


def test_delete_marks_for_removal_and_requests_reconcile(
    api_client, running_container, reconcile_requests, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = api_client.delete(f"/api/containers/{running_container.pk}/")

    assert response.status_code == 204
    running_container.refresh_from_db()
    assert running_container.deleted_at is not None
    assert reconcile_requests == [[running_container.pk]]
    assert api_client.get(f"/api/containers/{running_container.pk}/").status_code == 404
    assert audit("container.destroy").success


# -- power ---------------------------------------------------------------------------------


def test_power_on_sets_desired_running_and_requests_reconcile(
    api_client, stopped_container, reconcile_requests, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = api_client.post(f"/api/containers/{stopped_container.pk}/power_on/")

    assert response.status_code == 200
    assert response.json() == {"status": "starting...", "desired_state": "running"}
    stopped_container.refresh_from_db()
    assert stopped_container.desired_state == "running"
    assert reconcile_requests == [[stopped_container.pk]]
    assert audit("container.power_on").success


def test_power_on_beyond_the_credits_is_403(api_client, user, stopped_container):
    user.quota.credits = 0
    user.quota.save()

    response = api_client.post(f"/api/containers/{stopped_container.pk}/power_on/")

    assert response.status_code == 403
    assert response.json()["code"] == "not_enough_credits"
    row = audit("container.power_on")
    assert not row.success and "not_enough_credits" in row.message


def test_power_off_sets_desired_stopped(
    api_client, running_container, reconcile_requests, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = api_client.post(f"/api/containers/{running_container.pk}/power_off/")

    assert response.status_code == 200
    assert response.json() == {"status": "stopping...", "desired_state": "stopped"}
    running_container.refresh_from_db()
    assert running_container.desired_state == "stopped"
    assert reconcile_requests == [[running_container.pk]]
    assert audit("container.power_off").success


# -- VM actions ----------------------------------------------------------------------------


def test_restart_reboots_the_vm(api_client, running_container):
    response = api_client.post(f"/api/containers/{running_container.pk}/restart_container/")

    assert response.status_code == 200
    assert response.json() == {"status": "restarted"}
    assert audit("container.restart_shell").success


def test_restart_of_a_stopped_container_is_409(api_client, stopped_container):
    response = api_client.post(f"/api/containers/{stopped_container.pk}/restart_container/")

    assert response.status_code == 409
    assert response.json()["code"] == "container_not_running"
    assert not audit("container.restart_shell").success


def test_exec_runs_the_command_in_app(api_client, running_container):
    response = api_client.post(
        f"/api/containers/{running_container.pk}/exec_command/",
        {"cmd": "echo hi; echo oops >&2; exit 3"},
        format="json",
    )

    assert response.status_code == 200
    assert response.json() == {"ok": False, "exit_code": 3, "stdout": "hi\n", "stderr": "oops\n"}
    row = audit("container.send_command")
    assert row.success and row.metadata["exit_code"] == 3


@override_settings(EXEC_TIMEOUT_SECONDS=1)
def test_exec_is_bounded_in_time(api_client, running_container):
    response = api_client.post(
        f"/api/containers/{running_container.pk}/exec_command/", {"cmd": "sleep 5"}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["ok"] is False
    assert response.json()["exit_code"] == 124


def test_exec_without_cmd_is_400(api_client, running_container):
    response = api_client.post(
        f"/api/containers/{running_container.pk}/exec_command/", {}, format="json"
    )

    assert response.status_code == 400


def test_exec_on_a_stopped_container_is_409(api_client, stopped_container):
    response = api_client.post(
        f"/api/containers/{stopped_container.pk}/exec_command/", {"cmd": "true"}, format="json"
    )

    assert response.status_code == 409


def test_exec_when_the_node_is_unreachable_is_503(api_client, running_container):
    from vm_manager.drivers.memory import InMemoryNodeDriver

    InMemoryNodeDriver.set_reachable(running_container.node.name, False)

    response = api_client.post(
        f"/api/containers/{running_container.pk}/exec_command/", {"cmd": "true"}, format="json"
    )

    assert response.status_code == 503
    assert response.json()["code"] == "node_unavailable"
    assert "node-secret-token" not in response.content.decode()


def upload(client, container, content: bytes, name: str = "notes.txt", **extra):
    data = {"file": io.BytesIO(content), **extra}
    data["file"].name = name
    return client.post(f"/api/containers/{container.pk}/upload_file/", data, format="multipart")


def test_upload_writes_the_file_into_app(api_client, running_container):
    response = upload(api_client, running_container, b"hello")

    assert response.status_code == 200
    assert response.json() == {"ok": True, "path": "/app/notes.txt", "dest": "/app"}
    assert (workspace(running_container) / "notes.txt").read_bytes() == b"hello"
    assert audit("container.upload_file").metadata["path"] == "/app/notes.txt"


def test_upload_into_a_subfolder(api_client, running_container):
    response = upload(api_client, running_container, b"x", dest_path="/app/src/lib")

    assert response.json()["path"] == "/app/src/lib/notes.txt"
    assert (workspace(running_container) / "src/lib/notes.txt").exists()


@override_settings(MAX_UPLOAD_BYTES=10)
def test_upload_over_the_limit_is_413(api_client, running_container):
    response = upload(api_client, running_container, b"x" * 11)

    assert response.status_code == 413
    assert response.json()["code"] == "file_too_large"
    assert "10 bytes" in response.json()["detail"]
    assert not (workspace(running_container) / "notes.txt").exists()
    assert not audit("container.upload_file").success


@override_settings(MAX_UPLOAD_BYTES=10)
def test_upload_with_a_huge_declared_length_is_413_before_reading(api_client, running_container):
    response = api_client.post(
        f"/api/containers/{running_container.pk}/upload_file/",
        data=b"--x--",
        content_type="multipart/form-data; boundary=x",
        CONTENT_LENGTH=str(10 * 1024 * 1024),
    )

    assert response.status_code == 413


@pytest.mark.parametrize("dest", ["/etc", "/app/../etc", "../.."])
def test_upload_outside_app_is_400(api_client, running_container, dest):
    response = upload(api_client, running_container, b"x", dest_path=dest)

    assert response.status_code == 400
    assert response.json()["code"] == "path_not_allowed"


def test_upload_without_a_file_is_400(api_client, running_container):
    response = api_client.post(
        f"/api/containers/{running_container.pk}/upload_file/", {}, format="multipart"
    )

    assert response.status_code == 400


def test_download_file_returns_bytes_as_attachment(api_client, running_container):
    (workspace(running_container) / "data.bin").write_bytes(b"\x00\x01binary")

    response = api_client.get(
        f"/api/containers/{running_container.pk}/download_file/?path=/app/data.bin"
    )

    assert response.status_code == 200
    assert body(response) == b"\x00\x01binary"
    assert response["Content-Disposition"] == 'attachment; filename="data.bin"'
    assert response["Content-Type"] == "application/octet-stream"
    assert audit("container.download_file").success


def test_download_file_streams_from_the_node_without_reading_the_file_whole(
    api_client, running_container, monkeypatch
):
    from vm_manager.drivers.memory import InMemoryNodeDriver

    (workspace(running_container) / "big.bin").write_bytes(b"z" * 300_000)

    async def whole_read(*args, **kwargs):
        raise AssertionError("a download must not read the file whole")

    monkeypatch.setattr(InMemoryNodeDriver, "read_file", whole_read)
    response = api_client.get(
        f"/api/containers/{running_container.pk}/download_file/?path=/app/big.bin"
    )

    assert response.status_code == 200 and response.streaming
    chunks = list(response.streaming_content)
    assert len(chunks) > 1 and sum(map(len, chunks)) == 300_000


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("app.json", "application/json"),
        ("index.html", "text/html"),
        ("notes.txt", "text/plain"),
        ("logo.png", "image/png"),
        ("site.tar.gz", "application/gzip"),
        ("Makefile", "application/octet-stream"),
    ],
)
def test_download_file_carries_a_content_type_guessed_from_the_name(
    api_client, running_container, name, content_type
):
    (workspace(running_container) / name).write_bytes(b"x")

    response = api_client.get(
        f"/api/containers/{running_container.pk}/download_file/?path=/app/{name}"
    )

    assert response.status_code == 200
    assert response["Content-Type"].split(";")[0] == content_type
    assert body(response) == b"x"


def test_download_file_ignores_the_accept_header(api_client, running_container):
    (workspace(running_container) / "a.txt").write_bytes(b"a")

    response = api_client.get(
        f"/api/containers/{running_container.pk}/download_file/?path=a.txt",
        HTTP_ACCEPT="image/png",
    )

    assert response.status_code == 200


def test_download_of_a_missing_file_is_404(api_client, running_container):
    response = api_client.get(
        f"/api/containers/{running_container.pk}/download_file/?path=/app/nope"
    )

    assert response.status_code == 404
    assert response.json()["code"] == "file_not_found"


def test_download_file_outside_app_is_400(api_client, running_container):
    response = api_client.get(
        f"/api/containers/{running_container.pk}/download_file/?path=/etc/passwd"
    )

    assert response.status_code == 400
    assert response.json()["code"] == "path_not_allowed"


def test_download_file_through_a_symlink_out_of_app_is_400(api_client, running_container):
    (workspace(running_container) / "escape").symlink_to("/etc/passwd")

    response = api_client.get(
        f"/api/containers/{running_container.pk}/download_file/?path=/app/escape"
    )

    assert response.status_code == 400


def test_download_file_without_path_is_400(api_client, running_container):
    response = api_client.get(f"/api/containers/{running_container.pk}/download_file/")

    assert response.status_code == 400


def test_download_folder_streams_a_zip(api_client, running_container):
    (workspace(running_container) / "src").mkdir()
    (workspace(running_container) / "src/main.py").write_text("print(1)\n")

    response = api_client.get(f"/api/containers/{running_container.pk}/download_folder/")

    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == "application/zip"
    assert response["Content-Disposition"] == 'attachment; filename="web-app.zip"'
    archive = zipfile.ZipFile(io.BytesIO(body(response)))
    assert archive.read("src/main.py") == b"print(1)\n"
    assert audit("container.download_folder").metadata == {"root": "/app", "fmt": "zip"}


def test_download_folder_as_tar_gz(api_client, running_container):
    (workspace(running_container) / "src").mkdir()
    (workspace(running_container) / "src/main.py").write_text("print(1)\n")

    response = api_client.get(
        f"/api/containers/{running_container.pk}/download_folder/?root=/app/src&prefer_fmt=tar.gz"
    )

    assert response["Content-Type"] == "application/gzip"
    with tarfile.open(fileobj=io.BytesIO(body(response)), mode="r:gz") as archive:
        assert archive.extractfile("./main.py").read() == b"print(1)\n"


def test_download_folder_outside_app_is_400(api_client, running_container):
    response = api_client.get(f"/api/containers/{running_container.pk}/download_folder/?root=/")

    assert response.status_code == 400


def test_download_folder_of_a_missing_folder_is_404(api_client, running_container):
    response = api_client.get(
        f"/api/containers/{running_container.pk}/download_folder/?root=/app/none"
    )

    assert response.status_code == 404


def test_download_folder_with_an_unknown_format_is_400(api_client, running_container):
    response = api_client.get(
        f"/api/containers/{running_container.pk}/download_folder/?prefer_fmt=rar"
    )

    assert response.status_code == 400


def test_download_folder_of_a_stopped_container_is_409(api_client, stopped_container):
    response = api_client.get(f"/api/containers/{stopped_container.pk}/download_folder/")

    assert response.status_code == 409


def test_statistics_of_a_running_container(api_client, running_container):
    response = api_client.get(f"/api/containers/{running_container.pk}/statistics/")

    assert response.status_code == 200
    assert set(response.json()) == {
        "ts",
        "cpu_percent",
        "rss_bytes",
        "rss_mib",
        "num_threads",
        "io",
    }


def test_statistics_of_a_stopped_container_is_409(api_client, stopped_container):
    response = api_client.get(f"/api/containers/{stopped_container.pk}/statistics/")

    assert response.status_code == 409
    assert response.json()["code"] == "container_not_running"


def test_statistics_of_a_crashed_vm_is_409(api_client, running_container):
    from vm_manager.drivers.memory import InMemoryNodeDriver

    InMemoryNodeDriver.crash_vm(running_container.node.name, running_container.vm_id)

    response = api_client.get(f"/api/containers/{running_container.pk}/statistics/")

    assert response.status_code == 409


def test_node_token_is_never_in_container_output(api_client, running_container):
    node = Node.objects.get()

    response = api_client.get(f"/api/containers/{running_container.pk}/")

    assert node.auth_token not in response.content.decode()


def test_an_archive_response_dropped_unread_leaks_nothing(api_client, running_container):
    import gc

    response = api_client.get(f"/api/containers/{running_container.pk}/download_folder/")
    assert response.status_code == 200
    del response
    gc.collect()  # an unclosed event loop would fail this test as an unraisable warning


def test_list_rows_match_the_container_serializer(api_client, user, make_container, node):
    from django.utils import timezone

    from vm_manager.api.serializers import ContainerSerializer

    made = [
        make_container(user, node=node),
        make_container(user, container_type=None),
        make_container(user, node=node, last_active_at=timezone.now()),
    ]

    listed = {c["id"]: c for c in api_client.get("/api/containers/").json()}

    for container in made:
        assert listed[container.pk] == ContainerSerializer(container).data


def test_a_rejected_input_is_audited_with_the_field_errors(api_client, running_container):
    api_client.post(f"/api/containers/{running_container.pk}/exec_command/", {}, format="json")

    row = audit("container.send_command")
    assert not row.success
    assert row.message.startswith("invalid: ")
    assert '"cmd"' in row.message


def test_created_container_is_booted_by_the_requested_reconcile(api_client, node, container_type):
    from vm_manager.reconciler import reconcile_once

    created = api_client.post(
        "/api/containers/", {"container_type": container_type.pk}, format="json"
    ).json()
    reconcile_once([created["id"]])

    container = Container.objects.get(pk=created["id"])
    assert container.status == "running"
    assert api_client.get(f"/api/containers/{container.pk}/statistics/").status_code == 200


def test_deleted_container_loses_vm_disk_and_row_at_the_next_reconcile(
    api_client, running_container
):
    from vm_manager.drivers.memory import InMemoryNodeDriver
    from vm_manager.reconciler import reconcile_once

    api_client.delete(f"/api/containers/{running_container.pk}/")
    reconcile_once([running_container.pk])

    assert running_container.vm_id not in InMemoryNodeDriver.node_state("node1").vms
    assert not Container.objects.filter(pk=running_container.pk).exists()


def test_a_refused_patch_changes_nothing(api_client, user, stopped_container):
    ResourceQuota.objects.filter(pk=user.quota.pk).update(credits=0)

    response = api_client.patch(
        f"/api/containers/{stopped_container.pk}/",
        {"name": "new", "desired_state": "running"},
        format="json",
    )

    assert response.status_code == 403
    stopped_container.refresh_from_db()
    assert stopped_container.name == "idle"


def test_download_file_with_a_name_over_255_bytes_is_400_path_too_long(
    api_client, running_container
):
    response = api_client.get(
        f"/api/containers/{running_container.pk}/download_file/?path=/app/{'n' * 256}"
    )

    assert response.status_code == 400
    assert response.json()["code"] == "path_too_long"
