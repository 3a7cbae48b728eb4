"""The site's 403, 404 and 500 answers (``handler403``/``404``/``500`` in the root URLs).

People get styled pages in the site's layout. The API (``/v1/...``) keeps answering
its one JSON error shape, also for what never reaches a DRF view (an unknown path, a
crash in middleware), because clients parse every answer there as JSON.

The 500 page is rendered with no request and no context processors: whatever broke
(the database, a context processor) must not break the error page too. If even that
fails, a plain page written here goes out instead.
"""

from __future__ import annotations

import logging

from django.http import HttpRequest, HttpResponse, HttpResponseServerError, JsonResponse
from django.shortcuts import render as render_page
from django.template import loader

from platform_site.api_errors import REGISTRY, error_body

log = logging.getLogger(__name__)

API_PREFIX = "/v1/"
FALLBACK_500 = (
    "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Server error · PixelAPI</title>"
    "</head><body><h1>Something went wrong on our side</h1>"
    "<p>Nothing was charged. Please try again in a minute.</p></body></html>"
)


def is_api(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIX)


def api_error(request: HttpRequest, code: str, message: str) -> JsonResponse:
    """The API's error shape, at the status registered for ``code``."""
    body = error_body(code, message, getattr(request, "request_id", None))
    return JsonResponse(body, status=REGISTRY[code].status)


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if is_api(request):
        return api_error(request, "permission_denied", REGISTRY["permission_denied"].description)
    return render_page(request, "403.html", status=403)


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if is_api(request):
        return api_error(request, "not_found", "No such resource.")
    return render_page(request, "404.html", {"path": request.path}, status=404)


def api_not_found(request: HttpRequest, rest: str = "") -> HttpResponse:
    """Every /v1/ path no API view owns: 404 in the error shape, for every method.

    Mounted last, so Django's APPEND_SLASH never sees an unknown API path: it would
    redirect a GET and, with DEBUG on, fail a POST with a RuntimeError (a 500). A GET
    of a real path without its trailing slash (``/v1/docs``) is still redirected.
    """
    if request.method in ("GET", "HEAD") and not request.path.endswith("/"):
        from django.http import HttpResponsePermanentRedirect
        from django.urls import Resolver404, resolve

        try:
            match = resolve(request.path + "/")
        except Resolver404:
            match = None
        if match is not None and match.func is not api_not_found:
            query = request.META.get("QUERY_STRING", "")
            return HttpResponsePermanentRedirect(request.path + "/" + ("?" + query if query else ""))
    return api_error(request, "not_found", "No such resource.")


def server_error(request: HttpRequest) -> HttpResponse:
    request_id = getattr(request, "request_id", None)
    if is_api(request):
        return api_error(request, "internal_error",
                         "Something went wrong on our side; nothing was charged. "
                         f"Quote request id {request_id} if you contact support.")
    try:
        # No request: no context processors, no session, no database.
        body = loader.get_template("500.html").render({"request_id": request_id})
    except Exception:  # the error page must not fail in turn
        log.exception("500.html could not be rendered; sending the plain fallback")
        body = FALLBACK_500
    return HttpResponseServerError(body)
