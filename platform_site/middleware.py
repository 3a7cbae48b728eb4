"""The project's middleware: request ids, staff ids in the logs, JSON errors under /v1/.

Every middleware here runs on both stacks without a thread of its own (``HybridMiddleware``):
under ASGI a synchronous middleware would make Django run the rest of the chain, the
render API's async wait included, inside a thread held for the whole request, which is
the very cost the ASGI server is there to remove (see ARCHITECTURE.md, issue 14).
"""

from __future__ import annotations

import secrets
from typing import Any, Awaitable, Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse


class HybridMiddleware:
    """A middleware that runs inline under WSGI and ASGI alike.

    Subclasses override ``before`` (return a response to answer early, or None) and
    ``after``; both must be quick and free of I/O, because under ASGI they run on the
    event loop. Django sees ``async_capable`` and passes an async ``get_response``.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def before(self, request: HttpRequest) -> HttpResponse | None:
        return None

    def after(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        return response

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        early = self.before(request)
        if early is not None:
            return early
        return self.after(request, self.get_response(request))

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        early = self.before(request)
        if early is not None:
            return early
        response = await self.get_response(request)
        return self.after(request, response)


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


class RequestIdMiddleware(HybridMiddleware):
    """Gives each request a fresh id (client-sent ids are not trusted for logs)."""

    def before(self, request: HttpRequest) -> None:
        from gpu_worker import logs

        request.request_id = new_request_id()  # type: ignore[attr-defined]
        # Fresh ids at the start of each request (a thread serves many), and not reset at
        # its end: Django logs a 4xx/5xx answer ("django.request") after the middleware
        # chain has returned, and that line must carry the request id too.
        logs.request_id.set(request.request_id)  # type: ignore[attr-defined]
        logs.render_id.set(None)
        logs.user_id.set(None)
        return None

    def after(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        response["X-Request-Id"] = request.request_id  # type: ignore[attr-defined]
        return response


def log_staff_user(user: Any) -> None:
    """Staff actions are attributable in the logs; customers' ids stay out of them."""
    from gpu_worker import logs

    if getattr(user, "is_staff", False):
        logs.user_id.set(user.pk)


class StaffLogContextMiddleware(HybridMiddleware):
    """After AuthenticationMiddleware: a signed-in staff user's id goes on each log line.

    Reading ``request.user`` loads the session and the user, so the async path awaits
    ``request.auser()`` rather than touching the database on the event loop.
    """

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall_with_user(request)
        log_staff_user(getattr(request, "user", None))
        return self.get_response(request)

    async def _acall_with_user(self, request: HttpRequest) -> HttpResponse:
        auser: Callable[[], Awaitable[Any]] | None = getattr(request, "auser", None)
        if auser is not None:
            log_staff_user(await auser())
        return await self.get_response(request)


# What a non-JSON error under /v1/ is answered with instead, by status.
_CODE_FOR_STATUS = {400: "invalid_request", 403: "permission_denied", 404: "not_found",
                    405: "method_not_allowed", 413: "request_too_large", 415: "unsupported_media_type",
                    429: "rate_limited"}
_KEPT_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate")


class ApiErrorShapeMiddleware(HybridMiddleware):
    """Every error under /v1/ in the API's JSON error shape, whatever produced it.

    DRF views and the JSON handlers already answer so; this is the net under what they
    cannot reach: Django's debug pages (with DEBUG on, an unknown path, a crash outside
    a view or a refused request answers HTML before any handler runs), and views with
    their own renderers (the schema view renders its errors as YAML). Clients parse
    every answer there as JSON, and the schema promises them this shape.
    """

    def after(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
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
