"""The render gallery, a render's page, its status as JSON, and its input image."""

from __future__ import annotations

import logging
from typing import Any

import redis
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.files.storage import default_storage
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render as render_page
from django.urls import reverse
from django.views.decorators.http import require_GET

from billing import ledger
from imaging import lifecycle
from imaging.dashboard import reference, snippets
from imaging.dashboard.access import owned_render
from imaging.dashboard.display import render_rows
from imaging.dashboard.media import base_url, links_for
from imaging.dashboard.progress import progress_of
from imaging.dashboard.result_display import result_rows, staff_diagnostics
from imaging.models import Render, RenderEvent, RenderStatus
from imaging.signed_urls import serves_locally, signed_url

log = logging.getLogger(__name__)

RENDERS_PER_PAGE = 24
STATUS_FILTERS = [s.value for s in RenderStatus]
# Observers are named in each render's audit trail (RenderEvent.actor).
ACTOR = "dashboard"


def refreshed(render: Render) -> tuple[Render, bool]:
    """The render after one look at its job; (render, False) when Redis cannot be reached."""
    try:
        return lifecycle.refresh(render, actor=ACTOR), True
    except redis.RedisError:
        log.warning("could not refresh render %s: Redis unreachable", render.public_id)
        return render, False


@login_required
@require_GET
def gallery(request: HttpRequest) -> HttpResponse:
    renders = Render.objects.filter(user_id=request.user.pk).select_related("api_key").order_by("-created_at")
    status = request.GET.get("status", "")
    if status in STATUS_FILTERS:
        renders = renders.filter(status=status)
    else:
        status = ""
    page = Paginator(renders, RENDERS_PER_PAGE).get_page(request.GET.get("page"))
    return render_page(request, "console/renders.html", {
        "page": page,
        "rows": render_rows(page.object_list, request),
        "status": status,
        "status_filters": STATUS_FILTERS,
    })


@login_required
@require_GET
def detail(request: HttpRequest, public_id: str) -> HttpResponse:
    render = owned_render(request, public_id)
    queue_ok = True
    if not render.is_terminal:
        render, queue_ok = refreshed(render)
    row = render_rows([render], request)[0]
    preferred = render.api_key if render.api_key_id else None
    return render_page(request, "console/render_detail.html", {
        "row": row,
        "render": render,
        "progress": progress_of(render),
        "cost": settings.CREDITS_PER_RENDER,
        "queue_ok": queue_ok,
        "curl": snippets.render_curl(render, base_url(request), snippets.key_hint(request.user, preferred)),
        # The registry's text marks commands and field names with `backticks`, as the docs show them.
        "error_message_html": reference.inline_code(render.error_message),
        "events": RenderEvent.objects.filter(render=render).order_by("created_at", "id"),
        "result_rows": result_rows(render),
        "diagnostics": staff_diagnostics(render) if request.user.is_staff else "",
    })


def status_payload(render: Render, request: HttpRequest) -> dict[str, Any]:
    """What the playground's progress display reads; the same facts as the render page."""
    links = links_for(render, request)
    payload: dict[str, Any] = {
        "id": render.public_id,
        "status": render.status,
        "progress": progress_of(render).as_dict(),
        "detail_url": reverse("console:render-detail", args=[render.public_id]),
        "input_url": links.input_url,
        "output_url": links.output_url,
        "matte_url": links.matte_url,
        "width": render.width,
        "height": render.height,
        "credits_charged": render.credits_charged,
        "error": ({"code": render.error_code, "message": render.error_message}
                  if render.status == RenderStatus.FAILED else None),
    }
    if render.is_terminal:
        payload["credits_available"] = ledger.balances(render.user_id).available
    return payload


@require_GET
def status(request: HttpRequest, public_id: str) -> JsonResponse:
    """Session-authenticated JSON for the progress display; owner only (404 for others)."""
    if not request.user.is_authenticated:
        return JsonResponse({"error": {"code": "not_signed_in", "message": "Sign in again."}}, status=401)
    try:
        render = owned_render(request, public_id)
    except Http404:
        return JsonResponse({"error": {"code": "not_found", "message": "No such render."}}, status=404)
    queue_ok = True
    if not render.is_terminal:
        render, queue_ok = refreshed(render)
    payload = status_payload(render, request)
    payload["queue_reachable"] = queue_ok
    response = JsonResponse(payload)
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_GET
def input_image(request: HttpRequest, public_id: str) -> HttpResponse:
    """The render's normalised input (always PNG), for its owner's eyes only."""
    render = owned_render(request, public_id)
    if not render.input_key or render.files_purged_at is not None:
        raise Http404("This input is no longer stored.")
    if not serves_locally():
        # S3 and friends: a short presigned link instead of streaming through Django.
        return HttpResponseRedirect(signed_url(render.input_key, ttl=300).url)
    try:
        handle = default_storage.open(render.input_key, "rb")
    except FileNotFoundError:
        raise Http404("This input is no longer stored.") from None
    response = FileResponse(handle, content_type="image/png")
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, max-age=3600"
    return response
