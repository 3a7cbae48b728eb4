"""Links to a render's images for the console's pages.

Outputs and mattes go through the API's signed, expiring URLs, the same links a
client gets in the render object. Inputs are not servable through those links (the
API never hands inputs back), so the console serves them to their owner only, from
``console:render-input`` behind the session.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.http import HttpRequest
from django.urls import reverse

from imaging.models import Render, RenderStatus
from imaging.signed_urls import signed_url


@dataclass(frozen=True)
class RenderLinks:
    input_url: str | None
    output_url: str | None
    matte_url: str | None


def base_url(request: HttpRequest) -> str:
    return request.build_absolute_uri("/").rstrip("/")


def links_for(render: Render, request: HttpRequest) -> RenderLinks:
    stored = render.files_purged_at is None
    succeeded = render.status == RenderStatus.SUCCEEDED and stored
    base = base_url(request)
    return RenderLinks(
        input_url=reverse("console:render-input", args=[render.public_id]) if stored and render.input_key else None,
        output_url=signed_url(render.output_key, base_url=base).url if succeeded and render.output_key else None,
        matte_url=signed_url(render.matte_key, base_url=base).url if succeeded and render.matte_key else None,
    )


def duration_seconds(render: Render) -> float | None:
    """From acceptance to the end, what the caller waited; None while the render is open."""
    if render.finished_at is None:
        return None
    return max(0.0, (render.finished_at - render.created_at).total_seconds())
