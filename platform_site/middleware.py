"""Request ids: every response carries X-Request-Id, and error bodies repeat it."""

from __future__ import annotations

import secrets
from typing import Any, Callable

from django.http import HttpRequest, HttpResponse


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


class RequestIdMiddleware:
    """Gives each request a fresh id (client-sent ids are not trusted for logs)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        from gpu_worker import logs

        request.request_id = new_request_id()  # type: ignore[attr-defined]
        # Fresh ids at the start of each request (a thread serves many), and not reset at
        # its end: Django logs a 4xx/5xx answer ("django.request") after the middleware
        # chain has returned, and that line must carry the request id too.
        logs.request_id.set(request.request_id)  # type: ignore[attr-defined]
        logs.render_id.set(None)
        logs.user_id.set(None)
        response = self.get_response(request)
        response["X-Request-Id"] = request.request_id  # type: ignore[attr-defined]
        return response


def log_staff_user(user: Any) -> None:
    """Staff actions are attributable in the logs; customers' ids stay out of them."""
    from gpu_worker import logs

    if getattr(user, "is_staff", False):
        logs.user_id.set(user.pk)


class StaffLogContextMiddleware:
    """After AuthenticationMiddleware: a signed-in staff user's id goes on each log line."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        log_staff_user(getattr(request, "user", None))
        return self.get_response(request)


# What a non-JSON error under /v1/ is answered with instead, by status.
_CODE_FOR_STATUS = {400: "invalid_request", 403: "permission_denied", 404: "not_found",
                    405: "method_not_allowed", 413: "request_too_large", 415: "unsupported_media_type",
                    429: "rate_limited"}
_KEPT_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate")


class ApiErrorShapeMiddleware:
    """Every error under /v1/ in the API's JSON error shape, whatever produced it.

    DRF views and the JSON handlers already answer so; this is the net under what they
    cannot reach: Django's debug pages (with DEBUG on, an unknown path, a crash outside
    a view or a refused request answers HTML before any handler runs), and views with
    their own renderers (the schema view renders its errors as YAML). Clients parse
    every answer there as JSON, and the schema promises them this shape.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (response.status_code < 400 or not request.path.startswith("/v1/")
                or "json" in response.get("Content-Type", "")):
            return response
        from django.http import JsonResponse

        from platform_site.api_errors import REGISTRY, error_body

        status = response.status_code
        code = _CODE_FOR_STATUS.get(status, "internal_error" if status >= 500 else "invalid_request")
        message = REGISTRY[code].description
        if status >= 500:
            message += f" Quote request id {getattr(request, 'request_id', None)} if you contact support."
        replacement = JsonResponse(error_body(code, message, getattr(request, "request_id", None)), status=status)
        for name in _KEPT_HEADERS:
            if name in response:
                replacement[name] = response[name]
        return replacement
