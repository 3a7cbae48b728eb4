"""One error shape for the whole API, and the registry of its stable codes.

Every error the API returns looks like::

    {"error": {"type": ..., "code": ..., "message": ..., "param": ..., "request_id": ...}}

Codes are stable snake_case strings that clients switch on, so they live in one
registry (``REGISTRY``); the docs page and the OpenAPI schema are generated from it
and cannot drift. A feature adds its codes with ``register`` at import time of its
own ``errors`` module and raises ``ApiError(code, message, param=...)``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.http import Http404
from rest_framework import exceptions as drf_exceptions
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.response import Response

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ErrorCode:
    code: str
    status: int
    type: str
    description: str


REGISTRY: dict[str, ErrorCode] = {}


def register(code: str, status: int, type: str, description: str) -> ErrorCode:
    """Adds a code to the registry; registering the same code differently is a bug."""
    entry = ErrorCode(code, status, type, description)
    existing = REGISTRY.get(code)
    if existing is not None and existing != entry:
        raise ValueError(f"error code {code!r} registered twice with different meaning")
    REGISTRY[code] = entry
    return entry


class ApiError(Exception):
    """Raised anywhere under a DRF view; rendered by ``exception_handler``."""

    def __init__(
        self,
        code: str,
        message: str | None = None,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        if code not in REGISTRY:
            raise ValueError(f"unregistered error code {code!r}")
        # Without a message of its own, the error says what the registry documents.
        message = message if message is not None else REGISTRY[code].description
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.headers = headers or {}

    @property
    def status(self) -> int:
        return REGISTRY[self.code].status


INVALID_REQUEST = register(
    "invalid_request", 400, "invalid_request_error",
    "A field is missing, of the wrong type, out of range or unknown; `param` names it.",
)
INVALID_JSON = register(
    "invalid_json", 400, "invalid_request_error", "The request body is not valid JSON."
)
UNSUPPORTED_MEDIA_TYPE = register(
    "unsupported_media_type", 415, "invalid_request_error",
    "The request's Content-Type is neither application/json nor multipart/form-data.",
)
MISSING_API_KEY = register(
    "missing_api_key", 401, "authentication_error",
    "No `Authorization: Bearer <key>` header was sent.",
)
INVALID_API_KEY = register(
    "invalid_api_key", 401, "authentication_error",
    "The API key is malformed, unknown or revoked.",
)
PERMISSION_DENIED = register(
    "permission_denied", 403, "permission_error", "The key may not perform this action."
)
NOT_FOUND = register(
    "not_found", 404, "invalid_request_error",
    "No such resource, or it belongs to another account.",
)
METHOD_NOT_ALLOWED = register(
    "method_not_allowed", 405, "invalid_request_error", "The HTTP method is not allowed here."
)
RATE_LIMITED = register(
    "rate_limited", 429, "rate_limit_error",
    "Too many requests or too many renders in flight, for this key or across all of the "
    "customer's keys, or too many unknown API keys from this address; retry after "
    "`Retry-After` seconds.",
)
REQUEST_TOO_LARGE = register(
    "request_too_large", 413, "invalid_request_error",
    "The request body is larger than the API accepts (a JSON body over 2.5 MB; uploads have "
    "their own limit, `image_too_large`).",
)
INTERNAL_ERROR = register(
    "internal_error", 500, "api_error", "Something went wrong on our side; nothing was charged."
)


def error_body(
    code: str, message: str, request_id: str | None, param: str | None = None
) -> dict[str, Any]:
    return {
        "error": {
            "type": REGISTRY[code].type,
            "code": code,
            "message": message,
            "param": param,
            "request_id": request_id,
        }
    }


def error_response(
    request: Any, code: str, message: str, *, param: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    request_id = getattr(request, "request_id", None)
    response = Response(
        error_body(code, message, request_id, param), status=REGISTRY[code].status
    )
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def _first_validation_error(detail: Any, prefix: str = "") -> tuple[str | None, str]:
    """Flattens DRF's nested ValidationError detail to (param, message) of the first error."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = prefix + str(key) if key != "non_field_errors" else prefix.rstrip(".")
            param, message = _first_validation_error(value, name + ".")
            return (param if param is not None else (name or None)), message
    if isinstance(detail, list) and detail:
        return _first_validation_error(detail[0], prefix)
    return (prefix.rstrip(".") or None), str(detail)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF exception handler: every failure becomes the one error shape."""
    request = context.get("request")
    if isinstance(exc, ApiError):
        return error_response(request, exc.code, exc.message, param=exc.param, headers=exc.headers)
    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = drf_exceptions.PermissionDenied()
    elif isinstance(exc, RequestDataTooBig):
        # Django refuses to read a body over DATA_UPLOAD_MAX_MEMORY_SIZE: the client's to fix.
        return error_response(request, "request_too_large",
                              "The request body is larger than the API accepts.")
    elif isinstance(exc, SuspiciousOperation):
        # Too many form fields or files, a malformed Host: a bad request, not our failure.
        return error_response(request, "invalid_request", "The request is malformed: " + str(exc))
    if not isinstance(exc, drf_exceptions.APIException):
        # A bug or an outage we did not expect here: the full story goes to the log with
        # the request id; the client gets the one error shape, not Django's HTML page,
        # and no internal text.
        request_id = getattr(request, "request_id", None)
        log.error("unhandled %s in %s (request %s)", type(exc).__name__,
                  getattr(request, "path", "?"), request_id, exc_info=exc)
        return error_response(request, "internal_error",
                              "Something went wrong on our side; nothing was charged. "
                              f"Quote request id {request_id} if you contact support.")

    headers: dict[str, str] = {}
    param = None
    if isinstance(exc, drf_exceptions.NotAuthenticated):
        code, message = "missing_api_key", "Send your API key as `Authorization: Bearer <key>`."
        headers["WWW-Authenticate"] = 'Bearer realm="api"'
    elif isinstance(exc, drf_exceptions.AuthenticationFailed):
        code, message = "invalid_api_key", str(exc.detail)
        headers["WWW-Authenticate"] = 'Bearer realm="api", error="invalid_token"'
    elif isinstance(exc, drf_exceptions.ParseError):
        code, message = "invalid_json", str(exc.detail)
    elif isinstance(exc, drf_exceptions.UnsupportedMediaType):
        code, message = "unsupported_media_type", str(exc.detail)
    elif isinstance(exc, drf_exceptions.ValidationError):
        param, message = _first_validation_error(exc.detail)
        code = "invalid_request"
    elif isinstance(exc, drf_exceptions.NotFound):
        code, message = "not_found", "No such resource."
    elif isinstance(exc, drf_exceptions.MethodNotAllowed):
        code, message = "method_not_allowed", str(exc.detail)
    elif isinstance(exc, drf_exceptions.Throttled):
        code = "rate_limited"
        message = getattr(exc, "public_message", "Too many requests; slow down.")
        if exc.wait is not None:
            headers["Retry-After"] = str(max(1, int(exc.wait + 0.999)))
    elif isinstance(exc, drf_exceptions.PermissionDenied):
        code, message = "permission_denied", str(exc.detail)
    else:
        code, message = "internal_error", str(exc.detail)
    return error_response(request, code, message, param=param, headers=headers)


class JsonDespiteAccept(DefaultContentNegotiation):
    """Content negotiation that answers in the view's own format when ``Accept`` names no other.

    The API speaks JSON only (files: their image type). DRF would refuse an ``Accept``
    it cannot satisfy with 406, and the error shape had no code for that: a 500. HTTP
    lets a server disregard ``Accept`` (RFC 9110, 12.5.1), which is what clients that
    send ``Accept: text/html`` or ``image/png`` expect anyway.
    """

    def select_renderer(self, request: Any, renderers: list, format_suffix: str | None = None) -> tuple:
        try:
            return super().select_renderer(request, renderers, format_suffix)
        except drf_exceptions.NotAcceptable as exc:
            # The renderers left after any ?format= (an unknown format is a 404 before this).
            available = getattr(exc, "available_renderers", None) or renderers
            return available[0], available[0].media_type
