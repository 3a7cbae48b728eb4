"""The render API: POST /v1/image/replace-background and GET /v1/renders/{id}.

Response codes of the POST:

* 200: the render succeeded inside the sync window; the body is the render object.
* 202: still running when the window closed; the render object, ``status_url`` (also
  in ``Location``) and ``Retry-After``.
* A render that failed inside the window: the error shape at the failure code's
  status (e.g. 422 ``no_subject_found``, 503 ``model_unavailable``), with the failed
  render object under ``"render"``. Nothing is charged.
* Request errors (4xx) before any render exists: the error shape; nothing reserved.
  A key that cannot pay for a render gets 402 before anything is fetched or decoded.
* 503 ``queue_unavailable`` / ``storage_unavailable`` only before anything is
  reserved. Once the render exists, a failure of Redis, the database or our own code
  answers 202 with the render's id and ``status_url``: the client always learns it.

Every render response carries ``X-Credits-Charged`` and ``X-Credits-Remaining``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing import ledger
from imaging import idempotency, lifecycle, render_wait
from imaging.models import PUBLIC_ID_PATTERN, Render, RenderStatus
from imaging.ratelimit import ApiKeyRateThrottle
from imaging.renders import RenderParams, load_input_image, refuse_if_short, submit_render
from imaging.schema import render_detail_schema, replace_background_schema
from imaging.serializers import RenderRequestSerializer, RenderSerializer
from platform_site.api_errors import REGISTRY, ApiError, error_body

# Outages the render path is built to ride out: logged as one WARNING line, not a traceback.
OUTAGES = (RedisConnectionError, RedisTimeoutError, DatabaseError)

log = logging.getLogger(__name__)

# Multipart overhead allowed on top of the largest accepted image.
MAX_FORM_OVERHEAD_BYTES = 1_000_000
POLL_AFTER_SECONDS = 2


def base_url(request: Request) -> str:
    return request.build_absolute_uri("/").rstrip("/")


def render_body(request: Request, render: Render, credits_remaining: int | None) -> dict[str, Any]:
    context = {"base_url": base_url(request), "credits_remaining": credits_remaining}
    return RenderSerializer(render, context=context).data


def _credits_remaining(render: Render) -> int | None:
    try:
        return ledger.balances(render.user_id).available
    except DatabaseError:
        log.warning("render %s: could not read the owner's credits", render.public_id, exc_info=True)
        return None


def render_response(request: Request, render: Render, *, for_create: bool = True) -> Response:
    """The response for a render: 200 / 202 / failure shape for POST, always 200 for GET."""
    remaining = _credits_remaining(render)
    body = render_body(request, render, remaining)
    headers = {"X-Credits-Charged": str(render.credits_charged)}
    if remaining is not None:
        headers["X-Credits-Remaining"] = str(remaining)
    if not for_create or render.status == RenderStatus.SUCCEEDED:
        status = 200
    elif render.status == RenderStatus.FAILED:
        code = render.error_code
        envelope = error_body(code, render.error_message, getattr(request, "request_id", None))
        envelope["render"] = body
        return Response(envelope, status=envelope_status(code), headers=headers)
    else:
        status = 202
        headers["Retry-After"] = str(POLL_AFTER_SECONDS)
        headers["Location"] = body["status_url"]
    return Response(body, status=status, headers=headers)


def envelope_status(code: str) -> int:
    return REGISTRY[code].status if code in REGISTRY else 500


def _refuse_oversized_body(request: Request) -> None:
    """Refuses a huge upload from its Content-Length, before Django spools it to disk."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    limit = int(settings.FETCH_MAX_BYTES) + MAX_FORM_OVERHEAD_BYTES
    if length > limit:
        raise ApiError("image_too_large", f"The request body is larger than {limit} bytes.",
                       param="image_file")


def _fields_for_fingerprint(request: Request) -> Any:
    data = request.data
    if hasattr(data, "lists"):
        return {k: v for k, v in data.lists() if k not in request.FILES}
    return data


class ReplaceBackgroundView(APIView):
    parser_classes = [JSONParser, MultiPartParser]
    throttle_classes = [ApiKeyRateThrottle]

    @replace_background_schema
    def post(self, request: Request) -> Response:
        key = idempotency.key_from_request(request)
        _refuse_oversized_body(request)
        form_encoded = request.content_type.startswith("multipart/")
        serializer = RenderRequestSerializer(data=request.data, context={"form_encoded": form_encoded})
        serializer.is_valid(raise_exception=True)
        params = RenderParams.from_validated(serializer.validated_data)
        upload = serializer.validated_data.get("image_file")

        claim = None
        if key is not None:
            digest = idempotency.file_digest(upload) if upload is not None else None
            claim = idempotency.Claim(
                request.user, key,
                idempotency.fingerprint(request.path, _fields_for_fingerprint(request), digest))
            earlier = _earlier_answer(request, claim)
            if earlier is not None:
                return earlier
        refuse_if_short(request.user)
        if params.image_url:
            # Fetching can take FETCH_TIMEOUT_SECONDS: no pooled connection is held meanwhile.
            render_wait.release_connections()
        image = load_input_image(image_url=params.image_url, upload=upload)
        try:
            render = submit_render(request.user, request.auth, params, image, claim=claim)
        except idempotency.KeyTaken:
            # A twin created its render first; its record answers (or it is still running).
            earlier = _earlier_answer(request, claim) if claim is not None else None
            if earlier is None:
                raise idempotency.in_use_error() from None
            return earlier
        if prefers_async(request):
            # Pipelines that do not wait: 202 at once, with status_url (RFC 7240).
            response = render_response(request, render)
            response["Preference-Applied"] = "respond-async"
        elif getattr(request._request, "waits_async", False):
            # Under ASGI the wait happens in ``replace_background`` without a thread;
            # until it replaces it, this 202 (the render's id) is the answer.
            response = _fallback_answer(request, render)
            response.pending = PendingWait(render, claim, request)  # type: ignore[attr-defined]
            return response
        else:
            response = _answer_after_submit(request, render)
        idempotency.remember(claim, render, response)
        return response


def _earlier_answer(request: Request, claim: idempotency.Claim) -> Response | None:
    """The answer for a key used before (a replay, or its render's state), or None."""
    return idempotency.lookup(
        claim, answer=lambda render: render_response(request, lifecycle.refresh(render, actor="request")))


def _answer_after_submit(request: Request, render: Render) -> Response:
    """Waits for the render, then answers; once it exists, never an error without it.

    Whatever fails from here on (Redis, the database, a bug), the client is told the
    render's id: a 202 with its status URL, from which GET, the settle job or the
    sweeper carry it to its end.
    """
    try:
        render = lifecycle.wait_and_settle(render, float(settings.RENDER_SYNC_WINDOW_SECONDS), actor="request")
    except Exception as exc:
        _log_wait_failure(request, render, exc)
    return _fallback_answer(request, render)


def _log_wait_failure(request: Any, render: Render, exc: Exception) -> None:
    """The wait failed; the caller answers 202 with the render's id."""
    request_id = getattr(request, "request_id", None)
    if isinstance(exc, OUTAGES):
        # Redis or the database away for a moment: known, handled (202), no traceback.
        log.warning("render %s (request %s): waiting failed (%s: %s); answering 202", render.public_id,
                    request_id, type(exc).__name__, exc)
    else:
        log.error("render %s (request %s): waiting failed; answering 202", render.public_id, request_id,
                  exc_info=exc)


def _fallback_answer(request: Request, render: Render) -> Response:
    """The render's answer; if even that fails, a 202 with its id and status URL."""
    try:
        return render_response(request, render)
    except Exception:
        log.exception("render %s (request %s): answering 202 without the full render object",
                      render.public_id, getattr(request, "request_id", None))
        status_url = f"{base_url(request)}/v1/renders/{render.public_id}"
        body = {"id": render.public_id, "object": "render", "status": render.status, "status_url": status_url}
        return Response(body, status=202, headers={"Retry-After": str(POLL_AFTER_SECONDS), "Location": status_url,
                                                   "X-Credits-Charged": "0"})


def prefers_async(request: Request) -> bool:
    """``Prefer: respond-async`` (RFC 7240): the client wants 202 now, not the render."""
    for header in request.headers.get("Prefer", "").split(","):
        token = header.split(";", 1)[0].strip().lower()
        if token == "respond-async":
            return True
    return False


@dataclass
class PendingWait:
    """A submitted render whose request waits asynchronously (``replace_background``)."""

    render: Render
    claim: idempotency.Claim | None
    request: Request


_REPLACE_BACKGROUND = ReplaceBackgroundView.as_view()


@csrf_exempt
async def replace_background(request: HttpRequest) -> HttpResponse:
    """POST /v1/image/replace-background on either server.

    Under WSGI (and Django's test client) this is the threaded view, waiting in its
    thread. Under ASGI the DRF view runs as one short unit of database work that
    validates, reserves and queues the render and answers its 202; the wait for the
    outcome is then awaited on the event loop with no thread and no database
    connection (``imaging.render_wait``), and a second short unit settles the render
    and builds the final answer. If anything fails after the render exists, the 202
    from the first unit still names it.
    """
    if not isinstance(request, ASGIRequest):
        return await sync_to_async(_REPLACE_BACKGROUND, thread_sensitive=True)(request)
    request.waits_async = True  # type: ignore[attr-defined]
    response = await render_wait.db_unit(_REPLACE_BACKGROUND)(request)
    pending: PendingWait | None = getattr(response, "pending", None)
    if pending is None:
        return response
    render = pending.render
    try:
        render = await render_wait.wait_and_settle(render, float(settings.RENDER_SYNC_WINDOW_SECONDS))
    except Exception as exc:
        _log_wait_failure(request, render, exc)
    return await render_wait.db_unit(_final_answer)(pending, render, response)


# The schema generator and URL tooling find the DRF view behind the function.
replace_background.cls = _REPLACE_BACKGROUND.cls  # type: ignore[attr-defined]
replace_background.initkwargs = _REPLACE_BACKGROUND.initkwargs  # type: ignore[attr-defined]


def _final_answer(pending: PendingWait, render: Render, first: Response) -> Response:
    """The answer after the wait, rendered like the DRF view's own; else ``first``."""
    try:
        final = render_response(pending.request, render)
        final.accepted_renderer = first.accepted_renderer  # type: ignore[attr-defined]
        final.accepted_media_type = first.accepted_media_type  # type: ignore[attr-defined]
        final.renderer_context = first.renderer_context  # type: ignore[attr-defined]
        for name in ("Allow", "Vary"):
            if first.has_header(name):
                final[name] = first[name]
    except Exception:
        log.exception("render %s: answering with the first 202 after the wait", render.public_id)
        final = first
    idempotency.remember(pending.claim, render, final)
    return final


class RenderDetailView(APIView):
    throttle_classes = [ApiKeyRateThrottle]

    @render_detail_schema
    def get(self, request: Request, render_id: str) -> Response:
        if not re.fullmatch(PUBLIC_ID_PATTERN, render_id):
            raise ApiError("not_found", "No such render.", param="id")
        render = Render.objects.filter(public_id=render_id, user=request.user).first()
        if render is None:
            raise ApiError("not_found", "No such render.", param="id")
        render = lifecycle.refresh(render, actor="status_poll")
        return render_response(request, render, for_create=False)
