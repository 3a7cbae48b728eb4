"""The playground: try a render from the browser, charged exactly like an API call.

The form is validated by the API's own ``RenderRequestSerializer`` and submitted
through ``imaging.renders.submit_render`` (session user, no API key), the one code
path that reserves credits, stores the input, creates the render and queues it. It
does not wait for the render: with JavaScript the page polls
``console:render-status`` and shows progress and the result in place; without it the
POST redirects to the render's page, which shows the same progress on reload.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.shortcuts import render as render_page
from django.urls import reverse
from django.views.decorators.http import require_http_methods

import billing.errors  # noqa: F401  (registers insufficient_credits, raised by submit_render)
import imaging.errors  # noqa: F401  (registers the input codes, raised by load_input_image)
from billing import ledger
from imaging.dashboard.progress import LABELS, Progress
from imaging.models import OPEN_STATUSES, OutputFormat, Render
from imaging import renders, worker_capabilities
from imaging.serializers import RenderRequestSerializer
from platform_site.api_errors import ApiError

# Renders from the playground have no API key, hence no per-key in-flight cap; this
# keeps one browser tab from queueing up a GPU's afternoon. A soft cap (two submits
# in the same instant may both pass): credits, reserved under a row lock, are the hard one.
MAX_OPEN_PLAYGROUND_RENDERS = 3
# Multipart overhead allowed on top of the largest accepted image (as the API allows).
MAX_FORM_OVERHEAD_BYTES = 1_000_000
SOURCES = ("upload", "url")
FORM_FIELDS = ("scene_prompt", "output_format", "seed")
# Studio prompts: rendered by the studio engine on CPU, so they work on a fresh install
# without any diffusion weights. Clicking one fills the prompt field (console.js).
PROMPT_SUGGESTIONS = (
    "pure white background",
    "soft grey paper sweep",
    "pastel pink studio backdrop",
    "gradient from navy to teal",
)


class PlaygroundError(Exception):
    """Refused before anything was reserved; ``errors`` maps a form field (or "") to messages."""

    def __init__(self, errors: dict[str, list[str]], status: int = 400, code: str = "invalid_request",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__("; ".join(m for ms in errors.values() for m in ms))
        self.errors = errors
        self.status = status
        self.code = code
        # 429s say when to come back (Retry-After), as the API's do.
        self.headers = headers or ({"Retry-After": "1"} if status == 429 else {})


def _wants_json(request: HttpRequest) -> bool:
    return request.headers.get("Accept", "").startswith("application/json")


def _serializer_input(request: HttpRequest) -> dict[str, Any]:
    """Only the API's own fields, with the chosen image source; the serializer checks the rest."""
    data: dict[str, Any] = {}
    for name in FORM_FIELDS:
        value = request.POST.get(name, "")
        if value.strip():
            # People type " 42 "; the API takes a form integer only as bare digits.
            data[name] = value.strip() if name == "seed" else value
    # An unchecked checkbox is absent from the form; absent means off here, not the API's default.
    data["preserve_shadow"] = "true" if request.POST.get("preserve_shadow") else "false"
    if request.POST.get("source", "upload") == "url":
        if request.POST.get("image_url", "").strip():
            data["image_url"] = request.POST["image_url"].strip()
    elif "image_file" in request.FILES:
        data["image_file"] = request.FILES["image_file"]
    return data


def _form_field(param: str | None) -> str:
    """The form field an API error names, or "" for the form as a whole."""
    known = ("image_url", "image_file", "preserve_shadow", *FORM_FIELDS)
    return param if param in known else ""


def start_render(request: HttpRequest) -> Render:
    """Validates the form and submits the render; raises PlaygroundError with nothing reserved."""
    limit = int(settings.FETCH_MAX_BYTES) + MAX_FORM_OVERHEAD_BYTES
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > limit:
        raise PlaygroundError({"image_file": [f"The upload is larger than {settings.FETCH_MAX_BYTES:,} bytes."]},
                              status=413, code="image_too_large")
    source = request.POST.get("source", "upload")
    source = source if source in SOURCES else "upload"
    data = _serializer_input(request)
    serializer = RenderRequestSerializer(data=data, context={"form_encoded": True})
    if not serializer.is_valid():
        errors: dict[str, list[str]] = {}
        for name, messages in serializer.errors.items():
            field = name if name != "non_field_errors" else ""
            if field == "image_url" and source == "upload":
                field = "image_file"  # "send image_url or image_file": point at what they chose
            errors.setdefault(field, []).extend(str(m) for m in messages)
        raise PlaygroundError(errors)
    open_renders = Render.objects.filter(user_id=request.user.pk, api_key__isnull=True,
                                         status__in=OPEN_STATUSES).count()
    if open_renders >= MAX_OPEN_PLAYGROUND_RENDERS:
        raise PlaygroundError({"": [f"You already have {open_renders} playground renders running; "
                                    "wait for one to finish."]}, status=429, code="rate_limited")
    params = renders.RenderParams.from_validated(serializer.validated_data)
    try:
        renders.refuse_if_short(request.user)
        image = renders.load_input_image(image_url=params.image_url, upload=serializer.validated_data.get("image_file"))
        return renders.submit_render(request.user, None, params, image, actor="playground")
    except ApiError as exc:
        raise PlaygroundError({_form_field(exc.param): [exc.message]}, status=exc.status,
                              code=exc.code, headers=exc.headers) from None


def _context(request: HttpRequest, **extra: Any) -> dict[str, Any]:
    credits = ledger.balances(request.user)
    recent = (Render.objects.filter(user_id=request.user.pk, api_key__isnull=True)
              .order_by("-created_at")[:5])
    return {
        "credits": credits,
        "cost": settings.CREDITS_PER_RENDER,
        "can_afford": credits.available >= settings.CREDITS_PER_RENDER,
        "formats": OutputFormat.choices,
        "recent": recent,
        "values": {"source": "upload", "output_format": "png", "preserve_shadow": True, "scene_prompt": "",
                   "image_url": "", "seed": ""},
        "field_errors": {},
        "form_errors": [],
        "initial_progress": Progress("queued", LABELS["queued"], 0, 0.0, None),
        "prompt_suggestions": PROMPT_SUGGESTIONS,
        # False only when live workers said they have no diffusion model; None (unknown) says nothing.
        "diffusion_installed": worker_capabilities.diffusion_installed(),
        "max_mb": settings.FETCH_MAX_BYTES // 1_000_000,
        "max_megapixels": settings.MAX_IMAGE_PIXELS // 1_000_000,
        **extra,
    }


@login_required
@require_http_methods(["GET", "POST"])
def playground(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return render_page(request, "console/playground.html", _context(request))
    try:
        render = start_render(request)
    except PlaygroundError as exc:
        if _wants_json(request):
            return JsonResponse({"error": {"code": exc.code, "message": str(exc)}, "errors": exc.errors},
                                status=exc.status, headers=exc.headers)
        values = {
            "source": request.POST.get("source", "upload"),
            "output_format": request.POST.get("output_format", "png"),
            "preserve_shadow": bool(request.POST.get("preserve_shadow")),
            "scene_prompt": request.POST.get("scene_prompt", ""),
            "image_url": request.POST.get("image_url", ""),
            "seed": request.POST.get("seed", ""),
        }
        page = render_page(request, "console/playground.html",
                           _context(request, values=values, field_errors=exc.errors,
                                    form_errors=exc.errors.get("", [])), status=exc.status)
        for name, value in exc.headers.items():
            page[name] = value
        return page
    detail_url = reverse("console:render-detail", args=[render.public_id])
    if _wants_json(request):
        return JsonResponse({
            "id": render.public_id,
            "status": render.status,
            "status_url": reverse("console:render-status", args=[render.public_id]),
            "detail_url": detail_url,
            "input_url": reverse("console:render-input", args=[render.public_id]),
        }, status=202)
    response = redirect(detail_url)
    response.status_code = 303  # See Other: the browser GETs the render's page
    return response
