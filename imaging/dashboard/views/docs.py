"""Developer docs: public, with the reader's key prefix as a hint when they are signed in."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render as render_page
from django.views.decorators.http import require_GET

from imaging.dashboard import reference, snippets
from imaging.dashboard.media import base_url


@require_GET
def docs(request: HttpRequest) -> HttpResponse:
    """Public: people read the docs before they sign up."""
    base = base_url(request)
    hint = snippets.key_hint(request.user)
    return render_page(request, "console/docs.html", {
        "base_url": base,
        "key_prefix": settings.API_KEY_PREFIX,
        "hint": hint,
        "curl_example": snippets.quickstart_curl(base, hint),
        "upload_example": snippets.quickstart_upload_curl(base),
        "python_example": snippets.quickstart_python(base, hint),
        "request_fields": reference.request_fields(),
        "render_fields": reference.render_fields(),
        "error_codes": reference.error_codes(),
        "cost": settings.CREDITS_PER_RENDER,
        "rate_per_minute": settings.API_RATE_LIMIT_PER_MINUTE,
        "max_in_flight": settings.API_MAX_RENDERS_IN_FLIGHT_PER_KEY,
        "customer_rate_per_minute": settings.API_RATE_LIMIT_PER_MINUTE_PER_CUSTOMER,
        "customer_max_in_flight": settings.API_MAX_RENDERS_IN_FLIGHT_PER_CUSTOMER,
        "unknown_keys_per_minute": settings.API_UNKNOWN_KEYS_PER_MINUTE_PER_IP,
        "sync_window": int(settings.RENDER_SYNC_WINDOW_SECONDS),
        "url_ttl_hours": settings.OUTPUT_URL_TTL_SECONDS // 3600,
        "deadline_minutes": settings.RENDER_DEADLINE_SECONDS // 60,
        "max_megapixels": settings.MAX_IMAGE_PIXELS // 1_000_000,
        "max_side": settings.MAX_IMAGE_SIDE,
        "max_mb": settings.FETCH_MAX_BYTES // 1_000_000,
        "retention_days": settings.RETENTION_DAYS,
        "fetch_timeout": f"{settings.FETCH_TIMEOUT_SECONDS:g}",
        "max_redirects": settings.FETCH_MAX_REDIRECTS,
    })
