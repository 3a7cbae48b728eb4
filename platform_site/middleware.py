"""Request ids: every response carries X-Request-Id, and error bodies repeat it."""

from __future__ import annotations

import secrets
from typing import Callable

from django.http import HttpRequest, HttpResponse


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


class RequestIdMiddleware:
    """Gives each request a fresh id (client-sent ids are not trusted for logs)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.request_id = new_request_id()  # type: ignore[attr-defined]
        response = self.get_response(request)
        response["X-Request-Id"] = request.request_id  # type: ignore[attr-defined]
        return response
