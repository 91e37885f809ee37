"""REST views of the VM manager (thin: validate -> service -> output, one audit row each).

Entry points: ``UserViewSet`` (login/logout/me), ``ContainerTypeViewSet``,
``ContainerViewSet`` (CRUD and VM actions), ``TemplateViewSet`` (read; staff write; apply).

Reads (lists, retrieve, statistics) are not audited: the frontend polls them. Every other
route writes the AuditLog row the contract names, with ``success=False`` and the reason when
it fails, including a 404 for a container the user cannot see.
"""

from __future__ import annotations

import mimetypes
import posixpath
from typing import Any, TypeVar

from django.conf import settings
from django.contrib.auth import authenticate, login, logout
from django.core.handlers.asgi import ASGIRequest
from django.db.models import Model, QuerySet
from django.http import Http404, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.utils.http import content_disposition_header
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import Serializer

from internal_config.audit import audit_log_http, redact_secrets
from pequeroku.body_limit import MULTIPART_SLACK_BYTES
from pequeroku.origins import CrossOriginRefused, require_same_site_login
from vm_manager import idle, selectors, services
from vm_manager.api.audit import audited
from vm_manager.api.pagination import ArrayLimitOffsetPagination
from vm_manager.api.schema import ApiAutoSchema, error_response
from vm_manager.api.serializers import (
    MAX_DB_INT,
    ContainerCreateSerializer,
    ContainerSerializer,
    ContainerTypeSerializer,
    ContainerUpdateSerializer,
    DownloadFileQuerySerializer,
    DownloadFolderQuerySerializer,
    ExecRequestSerializer,
    ExecResultSerializer,
    LoginSerializer,
    PowerSerializer,
    StatisticsSerializer,
    StatusSerializer,
    TemplateApplyResultSerializer,
    TemplateApplySerializer,
    TemplateSerializer,
    UploadRequestSerializer,
    UploadResultSerializer,
    UserSummarySerializer,
    container_row_data,
)
from vm_manager.api.throttling import login_username
from vm_manager.errors import InvalidCredentials, UploadTooLarge
from vm_manager.guest import commands, files, templates
from vm_manager.models import Container, ContainerType, FileTemplate

M = TypeVar("M", bound=Model)

ARCHIVE_CONTENT_TYPES = {"zip": "application/zip", "tar.gz": "application/gzip"}


def guessed_content_type(path: str) -> str:
    """From the file's name; compressed files keep their own type (``.tar.gz`` is gzip)."""
    kind, encoding = mimetypes.guess_type(posixpath.basename(path), strict=False)
    if encoding is not None:
        return {"gzip": "application/gzip", "bzip2": "application/x-bzip2"}.get(
            encoding, "application/octet-stream"
        )
    return kind or "application/octet-stream"


def validated(serializer_class: type[Serializer], data: Any) -> dict[str, Any]:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def object_or_404(queryset: QuerySet[M], pk: Any) -> M:
    """``pk`` must be a database-sized positive integer; anything else is simply not found."""
    try:
        value = int(str(pk))
    except ValueError:
        raise Http404 from None
    if not 0 < value <= MAX_DB_INT:
        raise Http404
    return get_object_or_404(queryset, pk=value)


class IgnoreAcceptHeader(BaseContentNegotiation):
    """Downloads answer bytes whatever Accept says; their errors are JSON."""

    def select_parser(self, request: Request, parsers: list[Any]) -> Any:
        return parsers[0] if parsers else None

    def select_renderer(
        self, request: Request, renderers: list[Any], format_suffix: str | None = None
    ) -> tuple[Any, str]:
        return renderers[0], renderers[0].media_type


# -- users ---------------------------------------------------------------------------------


def _audit_login_failure(request: Request, reason: str) -> None:
    audit_log_http(
        request,
        action="login",
        target_type="user",
        message=reason,
        metadata={"username": login_username(request)},
        success=False,
    )


class UserViewSet(viewsets.ViewSet):
    schema = ApiAutoSchema()

    @extend_schema(
        request=LoginSerializer,
        responses={
            200: StatusSerializer,
            400: error_response("400"),
            403: error_response("403"),
            429: error_response("429"),
        },
        description="Session login (sets the session cookie); no CSRF token needed, but the "
        "request must come from this site (Origin/Referer), or be JSON when it names no origin. "
        "Failed logins are limited per username and per client address (429, Retry-After).",
    )
    @action(
        detail=False,
        methods=["post"],
        authentication_classes=[],
        permission_classes=[permissions.AllowAny],
    )
    def login(self, request: Request) -> Response:
        # Successful and failed credential checks are audited by internal_config's receivers
        # of Django's auth signals, throttled ones by the authentication backend; only what
        # never reaches authenticate() is audited here.
        try:
            require_same_site_login(request._request)
        except CrossOriginRefused as exc:
            _audit_login_failure(request, f"{exc.code}: {exc.message}")
            raise
        serializer = LoginSerializer(data=request.data)
        if not serializer.is_valid():
            _audit_login_failure(request, "invalid: malformed login request")
            raise ValidationError(serializer.errors)
        user = authenticate(
            request._request,
            username=serializer.validated_data["username"],
            password=serializer.validated_data["password"],
        )
        if user is None:
            raise InvalidCredentials()
        login(request._request, user)
        return Response({"status": "ok"})

    @extend_schema(request=None, responses={200: StatusSerializer})
    @action(detail=False, methods=["post"])
    def logout(self, request: Request) -> Response:
        logout(request._request)  # audited by internal_config's user_logged_out receiver
        return Response({"status": "ok"})

    @extend_schema(responses={200: UserSummarySerializer})
    @action(detail=False, methods=["get"])
    def me(self, request: Request) -> Response:
        with audited(
            request, "user.info", target_type="user", target_id=request.user.pk, deferred=True
        ):
            summary = selectors.user_summary(request.user)
        # Already plain JSON values in the documented shape (UserSummarySerializer, for the
        # schema); the serializer would only copy them on the frontend's 2 s poll.
        return Response(summary)


# -- container types -----------------------------------------------------------------------


class ContainerTypeViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """The types the user's quota allows."""

    schema = ApiAutoSchema()
    serializer_class = ContainerTypeSerializer
    pagination_class = ArrayLimitOffsetPagination
    queryset = ContainerType.objects.none()

    def get_queryset(self) -> QuerySet[ContainerType]:
        return selectors.container_types_for_user(self.request.user)


# -- containers ----------------------------------------------------------------------------

CONTAINER_ERRORS = {
    400: error_response("400"),
    403: error_response("403"),
    404: error_response("404"),
    409: error_response("409"),
    503: error_response("503"),
}


@extend_schema_view(
    create=extend_schema(
        request=ContainerCreateSerializer,
        responses={201: ContainerSerializer, 503: error_response("503")},
        description="Create a container (desired running). 403 when the quota is inactive, "
        "the type is not allowed or credits are short; 400 for an unknown type; 503 when no "
        "node can take it (nothing is created).",
    ),
    partial_update=extend_schema(
        request=ContainerUpdateSerializer,
        responses={200: ContainerSerializer, 409: error_response("409")},
        description="Rename, or change desired_state (credit-checked like power_on).",
    ),
    destroy=extend_schema(
        description="The reconciler stops the VM, removes it and its disk, then the row."
    ),
)
class ContainerViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    schema = ApiAutoSchema()
    serializer_class = ContainerSerializer
    pagination_class = ArrayLimitOffsetPagination
    queryset = Container.objects.none()
    # Any path segment reaches the view, so a malformed id is a JSON 404 like a missing one.
    lookup_value_regex = "[^/]+"
    http_method_names = ("get", "post", "patch", "delete", "head", "options")

    def get_queryset(self) -> QuerySet[Container]:
        return selectors.container_list_for_user(self.request.user)

    def get_object(self) -> Container:
        return object_or_404(self.get_queryset(), self.kwargs.get("pk"))

    def retrieve(self, request: Request, pk: str) -> Response:
        """Asking for a container's status is a use of it: an idle-suspended one resumes
        (without waiting: the status shows it coming back)."""
        container = self.get_object()
        if container.idle_suspended:
            idle.container_request_resume(container)
        else:
            idle.container_touch(container)
        return Response(ContainerSerializer(container).data)

    def list(self, request: Request) -> Response:
        rows = selectors.container_rows_list_for_user(request.user)
        page = self.paginate_queryset(rows)
        data = [container_row_data(row) for row in (rows if page is None else page)]
        return Response(data) if page is None else self.get_paginated_response(data)

    def _audited(self, request: Request, action_name: str, **kwargs: Any) -> Any:
        return audited(request, action_name, target_id=self.kwargs.get("pk", "")[:64], **kwargs)

    def create(self, request: Request) -> Response:
        with audited(request, "container.create") as entry:
            data = validated(ContainerCreateSerializer, request.data)
            entry.metadata = {"container_type": data["container_type"]}
            container = services.container_create(
                user=request.user,
                container_type_id=data["container_type"],
                name=data["container_name"],
            )
            entry.target_id = container.pk
        return Response(ContainerSerializer(container).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request: Request, pk: str) -> Response:
        with self._audited(request, "container.update") as entry:
            container = self.get_object()
            data = validated(ContainerUpdateSerializer, request.data)
            entry.metadata = {key: str(value) for key, value in data.items()}
            services.container_update(
                container, name=data.get("name"), desired_state=data.get("desired_state")
            )
        return Response(ContainerSerializer(self.get_object()).data)

    def destroy(self, request: Request, pk: str) -> Response:
        with self._audited(request, "container.destroy"):
            services.container_request_delete(self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses={200: PowerSerializer, 403: error_response("403")})
    @action(detail=True, methods=["post"])
    def power_on(self, request: Request, pk: str) -> Response:
        with self._audited(request, "container.power_on"):
            services.container_power_on(self.get_object())
        return Response({"status": "starting...", "desired_state": "running"})

    @extend_schema(request=None, responses={200: PowerSerializer})
    @action(detail=True, methods=["post"])
    def power_off(self, request: Request, pk: str) -> Response:
        with self._audited(request, "container.power_off"):
            services.container_power_off(self.get_object())
        return Response({"status": "stopping...", "desired_state": "stopped"})

    @extend_schema(
        request=None,
        responses={200: StatusSerializer, 409: CONTAINER_ERRORS[409], 503: CONTAINER_ERRORS[503]},
    )
    @action(detail=True, methods=["post"])
    def restart_container(self, request: Request, pk: str) -> Response:
        with self._audited(request, "container.restart_shell"):
            commands.container_restart(self.get_object())
        return Response({"status": "restarted"})

    @extend_schema(
        request=ExecRequestSerializer,
        responses={
            200: ExecResultSerializer,
            409: CONTAINER_ERRORS[409],
            503: CONTAINER_ERRORS[503],
        },
        description="Run a command with bash in /app; time and output are bounded.",
    )
    @action(detail=True, methods=["post"])
    def exec_command(self, request: Request, pk: str) -> Response:
        with self._audited(request, "container.send_command") as entry:
            container = self.get_object()
            cmd = validated(ExecRequestSerializer, request.data)["cmd"]
            entry.metadata = {"cmd": redact_secrets(cmd)[:500]}
            result = commands.container_exec(container, cmd)
            entry.metadata["exit_code"] = result["exit_code"]
        ok = result["exit_code"] == 0 and not result["timed_out"]
        return Response(
            {
                "ok": ok,
                "exit_code": result["exit_code"],
                "stdout": result["stdout"],
                "stderr": result["stderr"],
            }
        )

    @extend_schema(
        request={"multipart/form-data": UploadRequestSerializer},
        responses={
            200: UploadResultSerializer,
            409: CONTAINER_ERRORS[409],
            413: error_response("413"),
            503: CONTAINER_ERRORS[503],
        },
        description="Upload `file` into the folder `dest_path` (default /app); answers the "
        "file's `path` and the folder it landed in (`dest`). Open editors get `file_changed`.",
    )
    @action(detail=True, methods=["post"], parser_classes=[MultiPartParser, FormParser])
    def upload_file(self, request: Request, pk: str) -> Response:
        with self._audited(request, "container.upload_file") as entry:
            container = self.get_object()
            limit = settings.MAX_UPLOAD_BYTES
            length = request.META.get("CONTENT_LENGTH") or "0"
            if length.isdigit() and int(length) > limit + MULTIPART_SLACK_BYTES:
                raise UploadTooLarge(f"Uploads are limited to {limit} bytes.")
            data = validated(UploadRequestSerializer, request.data)
            upload = data["file"]
            entry.metadata = {"name": str(upload.name)[:200], "size": upload.size}
            if upload.size > limit:
                raise UploadTooLarge(f"Uploads are limited to {limit} bytes.")
            target = files.upload_target(data["dest_path"], str(upload.name))
            entry.metadata["path"] = target
            path = files.container_upload_file(container, target, upload.read())
        return Response({"ok": True, "path": path, "dest": posixpath.dirname(path)})

    @extend_schema(
        parameters=[DownloadFileQuerySerializer],
        responses={
            (200, "application/octet-stream"): OpenApiResponse(
                OpenApiTypes.BINARY,
                description="The file's bytes, streamed as an attachment; the Content-Type "
                "is guessed from the name (application/octet-stream when unknown).",
            ),
            400: error_response("400"),
            409: CONTAINER_ERRORS[409],
            503: CONTAINER_ERRORS[503],
        },
    )
    @action(detail=True, methods=["get"], content_negotiation_class=IgnoreAcceptHeader)
    def download_file(self, request: Request, pk: str) -> StreamingHttpResponse:
        with self._audited(request, "container.download_file") as entry:
            container = self.get_object()
            path = validated(DownloadFileQuerySerializer, request.query_params)["path"]
            target = files.guest_path(path)
            entry.metadata = {"path": target}
            chunks = files.container_download(
                container, target, asynchronous=isinstance(request._request, ASGIRequest)
            )
        response = StreamingHttpResponse(chunks, content_type=guessed_content_type(target))
        response["Content-Disposition"] = content_disposition_header(
            True, posixpath.basename(target) or "file"
        )
        return response

    @extend_schema(
        parameters=[DownloadFolderQuerySerializer],
        responses={
            (200, "application/zip"): OpenApiResponse(
                OpenApiTypes.BINARY, description="The folder as an archive, streamed."
            ),
            (200, "application/gzip"): OpenApiResponse(OpenApiTypes.BINARY),
            400: error_response("400"),
            409: CONTAINER_ERRORS[409],
            503: CONTAINER_ERRORS[503],
        },
    )
    @action(detail=True, methods=["get"], content_negotiation_class=IgnoreAcceptHeader)
    def download_folder(self, request: Request, pk: str) -> StreamingHttpResponse:
        with self._audited(request, "container.download_folder") as entry:
            container = self.get_object()
            data = validated(DownloadFolderQuerySerializer, request.query_params)
            fmt = data["prefer_fmt"]
            root = files.guest_path(data["root"])
            entry.metadata = {"root": root, "fmt": fmt}
            chunks = files.container_archive(
                container, root, fmt, asynchronous=isinstance(request._request, ASGIRequest)
            )
        response = StreamingHttpResponse(chunks, content_type=ARCHIVE_CONTENT_TYPES[fmt])
        folder = posixpath.basename(root.rstrip("/")) or "app"
        response["Content-Disposition"] = content_disposition_header(
            True, f"{container.name or 'workspace'}-{folder}.{fmt}"
        )
        return response

    @extend_schema(
        responses={
            200: StatisticsSerializer,
            409: CONTAINER_ERRORS[409],
            503: CONTAINER_ERRORS[503],
        }
    )
    @action(detail=True, methods=["get"])
    def statistics(self, request: Request, pk: str) -> Response:
        stats = commands.container_statistics(self.get_object())
        return Response(StatisticsSerializer(stats).data)


# -- templates -----------------------------------------------------------------------------


class StaffWritesOnly(permissions.DjangoModelPermissions):
    """Everyone reads (and applies) the templates they can see; changing them takes a staff
    account holding the model permission (add/change/delete_filetemplate), as in the admin."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if request.method in permissions.SAFE_METHODS or getattr(view, "action", "") == "apply":
            return True
        return bool(request.user and request.user.is_staff) and super().has_permission(
            request, view
        )


class TemplateViewSet(viewsets.ModelViewSet):
    schema = ApiAutoSchema()
    serializer_class = TemplateSerializer
    pagination_class = ArrayLimitOffsetPagination
    permission_classes = (permissions.IsAuthenticated, StaffWritesOnly)
    queryset = FileTemplate.objects.none()
    lookup_value_regex = "[^/]+"

    def get_queryset(self) -> QuerySet[FileTemplate]:
        return selectors.templates_for_user(self.request.user)

    def get_object(self) -> FileTemplate:
        return object_or_404(self.get_queryset(), self.kwargs.get("pk"))

    def _fetch(self, template: FileTemplate) -> dict[str, Any]:
        return TemplateSerializer(self.get_queryset().get(pk=template.pk)).data

    def create(self, request: Request) -> Response:
        with audited(request, "template.create", target_type="template", failures_only=True):
            serializer = TemplateSerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            fields = dict(serializer.validated_data)
            items = fields.pop("items", [])
            template = templates.template_create(
                actor=templates.Actor.from_request(request), fields=fields, items=items
            )
        return Response(self._fetch(template), status=status.HTTP_201_CREATED)

    def update(self, request: Request, pk: str, partial: bool = False) -> Response:
        action_name = "template.update"
        with audited(
            request, action_name, target_type="template", target_id=pk[:64], failures_only=True
        ):
            template = self.get_object()
            serializer = TemplateSerializer(template, data=request.data, partial=partial)
            serializer.is_valid(raise_exception=True)
            fields = dict(serializer.validated_data)
            items = fields.pop("items", None if partial else [])
            template = templates.template_update(
                template, actor=templates.Actor.from_request(request), fields=fields, items=items
            )
        return Response(self._fetch(template))

    def partial_update(self, request: Request, pk: str) -> Response:
        return self.update(request, pk, partial=True)

    def destroy(self, request: Request, pk: str) -> Response:
        with audited(
            request,
            "template.delete",
            target_type="template",
            target_id=pk[:64],
            failures_only=True,
        ):
            templates.template_delete(
                self.get_object(), actor=templates.Actor.from_request(request)
            )
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        request=TemplateApplySerializer,
        responses={
            200: TemplateApplyResultSerializer,
            409: CONTAINER_ERRORS[409],
            503: CONTAINER_ERRORS[503],
        },
        description="Write the template's files into a running container you can see.",
    )
    @action(detail=True, methods=["post"])
    def apply(self, request: Request, pk: str) -> Response:
        with audited(request, "template.apply", metadata={"template_id": pk[:64]}) as entry:
            data = validated(TemplateApplySerializer, request.data)
            entry.target_id = data["container_id"]
            template = self.get_object()
            container = object_or_404(
                selectors.container_list_for_user(request.user), data["container_id"]
            )
            count = templates.template_apply_to_container(
                template, container, dest_path=data["dest_path"], clean=data["clean"]
            )
        return Response(
            {
                "status": "applied",
                "template_id": template.pk,
                "container": container.pk,
                "dest_path": files.guest_path(data["dest_path"]),
                "files_count": count,
            }
        )
