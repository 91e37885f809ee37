"""Shapes of the REST API: validation of input, rendering of output; no side effects."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.utils import timezone
from rest_framework import serializers

from vm_manager.drivers import WORKSPACE_ROOT
from vm_manager.models import Container, ContainerType, FileTemplate, FileTemplateItem
from vm_manager.names import (
    DISPLAY_NAME_HELP,
    NO_MARKUP_HELP,
    display_name_validator,
    no_markup_validator,
)
from vm_manager.selectors import CONTAINER_ROW_FIELDS, CONTAINER_TYPE_FIELDS

MAX_DB_INT = 2**31 - 1
MAX_CMD_CHARS = 10_000
MAX_PATH_CHARS = 4096


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
    code = serializers.CharField()
    errors = serializers.DictField(
        required=False, help_text="Per-field messages when the input was invalid."
    )


class StatusSerializer(serializers.Serializer):
    status = serializers.CharField()


# -- users ---------------------------------------------------------------------------------


class LoginSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=4096, trim_whitespace=False)


class ContainerTypeSerializer(serializers.ModelSerializer):
    class Meta:
        model = ContainerType
        fields = CONTAINER_TYPE_FIELDS
        read_only_fields = fields


class QuotaSummarySerializer(serializers.Serializer):
    credits = serializers.IntegerField()
    credits_left = serializers.IntegerField()
    ai_use_per_day = serializers.IntegerField()
    ai_uses_left_today = serializers.IntegerField()
    active = serializers.BooleanField()
    allowed_types = ContainerTypeSerializer(many=True)


class UserSummarySerializer(serializers.Serializer):
    username = serializers.CharField()
    active_containers = serializers.IntegerField()
    has_quota = serializers.BooleanField()
    is_superuser = serializers.BooleanField()
    quota = QuotaSummarySerializer(allow_null=True)


# -- containers ----------------------------------------------------------------------------


class ContainerSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username", read_only=True)
    container_type_name = serializers.CharField(
        source="container_type.container_type_name", read_only=True, allow_null=True
    )

    class Meta:
        model = Container
        fields = (
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
            "suspended",
            "idle_suspended",
            "last_boot",
            "last_active_at",
        )
        read_only_fields = fields


_datetime_field = serializers.DateTimeField()
# Each output key of ContainerSerializer with the row field it is read from (same order).
_ROW_KEYS = tuple(zip(ContainerSerializer.Meta.fields, CONTAINER_ROW_FIELDS, strict=True))


def container_row_data(row: dict[str, Any]) -> dict[str, Any]:
    """``ContainerSerializer``'s output from a ``selectors.container_rows_for_user`` row.

    The list endpoint uses this (same keys, same formats; a test compares the two) because
    per-field serializer machinery over 50 rows dominates the request otherwise.
    """
    data = {key: row[field] for key, field in _ROW_KEYS}
    data["created_at"] = _iso_datetime(row["created_at"])
    if row["last_active_at"] is not None:
        data["last_active_at"] = _iso_datetime(row["last_active_at"])
    return data


def _iso_datetime(value: datetime) -> str:
    """``DateTimeField().to_representation`` for the aware datetimes the database returns
    (ISO 8601 in the current time zone, UTC as ``Z``) without its per-call checks, which cost
    most of the list's formatting."""
    if not timezone.is_aware(value):
        return _datetime_field.to_representation(value)
    text = value.astimezone(timezone.get_current_timezone()).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


class ContainerCreateSerializer(serializers.Serializer):
    container_type = serializers.IntegerField(min_value=1, max_value=MAX_DB_INT)
    container_name = serializers.CharField(
        max_length=100,
        required=False,
        allow_blank=True,
        default="",
        validators=[display_name_validator],
        help_text=DISPLAY_NAME_HELP,
    )


class ContainerUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(
        max_length=100,
        required=False,
        allow_blank=True,
        validators=[display_name_validator],
        help_text=DISPLAY_NAME_HELP,
    )
    desired_state = serializers.ChoiceField(choices=Container.DesiredState.choices, required=False)


class PowerSerializer(serializers.Serializer):
    status = serializers.CharField()
    desired_state = serializers.ChoiceField(choices=Container.DesiredState.choices)


class ExecRequestSerializer(serializers.Serializer):
    cmd = serializers.CharField(max_length=MAX_CMD_CHARS, trim_whitespace=False)


class ExecResultSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    exit_code = serializers.IntegerField()
    stdout = serializers.CharField(allow_blank=True)
    stderr = serializers.CharField(allow_blank=True)


class UploadRequestSerializer(serializers.Serializer):
    file = serializers.FileField(allow_empty_file=True, use_url=False)
    dest_path = serializers.CharField(
        max_length=MAX_PATH_CHARS, required=False, default=WORKSPACE_ROOT
    )


class UploadResultSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    path = serializers.CharField()
    dest = serializers.CharField(help_text="The folder the file was uploaded to, e.g. /app.")


class DownloadFileQuerySerializer(serializers.Serializer):
    path = serializers.CharField(max_length=MAX_PATH_CHARS)


class DownloadFolderQuerySerializer(serializers.Serializer):
    root = serializers.CharField(max_length=MAX_PATH_CHARS, required=False, default=WORKSPACE_ROOT)
    prefer_fmt = serializers.ChoiceField(choices=("zip", "tar.gz"), required=False, default="zip")


class StatisticsSerializer(serializers.Serializer):
    ts = serializers.FloatField()
    cpu_percent = serializers.FloatField()
    rss_bytes = serializers.IntegerField()
    rss_mib = serializers.FloatField()
    num_threads = serializers.IntegerField()
    io = serializers.DictField(child=serializers.IntegerField())


# -- templates -----------------------------------------------------------------------------


class TemplateItemSerializer(serializers.ModelSerializer):
    mode = serializers.IntegerField(min_value=0, max_value=0o7777, default=0o644)
    order = serializers.IntegerField(min_value=-MAX_DB_INT, max_value=MAX_DB_INT, default=0)

    class Meta:
        model = FileTemplateItem
        fields = ("id", "path", "content", "mode", "order")
        read_only_fields = ("id",)

    def validate_path(self, value: str) -> str:
        parts = value.replace("\\", "/").strip("/").split("/")
        if "\x00" in value or not value.strip("/") or ".." in parts:
            raise serializers.ValidationError("A relative path inside the destination folder.")
        return value


class TemplateSerializer(serializers.ModelSerializer):
    items = TemplateItemSerializer(many=True, required=False)

    class Meta:
        model = FileTemplate
        fields = (
            "id",
            "name",
            "slug",
            "description",
            "public",
            "items",
            "created_at",
            "updated_at",
        )
        read_only_fields = ("id", "created_at", "updated_at")
        extra_kwargs = {  # noqa: RUF012 - DRF's documented form
            "name": {"validators": [display_name_validator], "help_text": DISPLAY_NAME_HELP},
            "description": {"validators": [no_markup_validator], "help_text": NO_MARKUP_HELP},
        }

    def validate_items(self, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        paths = [item["path"] for item in value]
        if len(paths) != len(set(paths)):
            raise serializers.ValidationError("Each item needs its own path.")
        return value


class TemplateApplySerializer(serializers.Serializer):
    container_id = serializers.IntegerField(min_value=1, max_value=MAX_DB_INT)
    dest_path = serializers.CharField(
        max_length=MAX_PATH_CHARS, required=False, default=WORKSPACE_ROOT
    )
    clean = serializers.BooleanField(required=False, default=True)


class TemplateApplyResultSerializer(serializers.Serializer):
    status = serializers.CharField()
    template_id = serializers.IntegerField()
    container = serializers.IntegerField()
    dest_path = serializers.CharField()
    files_count = serializers.IntegerField()
