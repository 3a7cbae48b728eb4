"""The landing page at ``/`` and ``/favicon.ico``.

The landing page is public and says what a visitor needs before signing up: what the
API does, a real before/after, the price. Its sample was made by the studio engine
from a built-in image (``static/landing/``: ``before.jpg``, ``after.jpg`` and
``sample.json`` with the prompt and seed it was made with), so it shows what a fresh
install renders, not a mock-up. Signed-in visitors get a button to their dashboard.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.staticfiles import finders
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render as render_page
from django.templatetags.static import static
from django.views.decorators.http import require_GET

from billing.models import CreditPack

log = logging.getLogger(__name__)

SAMPLE_PATH = "landing/sample.json"
FAVICON_PATH = "favicon.ico"
FAVICON_MAX_AGE_SECONDS = 86_400


@dataclass(frozen=True)
class Sample:
    """How the landing page's before/after was made, as ``sample.json`` records it."""

    prompt: str
    seed: int | None


def landing_sample() -> Sample | None:
    """The sample's prompt and seed; None (no caption) when the file is missing or malformed."""
    path = finders.find(SAMPLE_PATH)
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            data: Any = json.load(handle)
    except (OSError, ValueError):
        log.warning("landing sample %s is unreadable", SAMPLE_PATH, exc_info=True)
        return None
    if not isinstance(data, dict) or not isinstance(data.get("prompt"), str):
        return None
    seed = data.get("seed")
    return Sample(data["prompt"], seed if isinstance(seed, int) and not isinstance(seed, bool) else None)


@dataclass(frozen=True)
class PackPrice:
    """A credit pack as the landing page prices it: per pack and per render."""

    name: str
    credits: int
    renders: int
    price: str
    per_render: str


def pack_prices() -> list[PackPrice]:
    """The packs on sale, smallest first (the billing page sells the same rows)."""
    prices = []
    for pack in CreditPack.objects.filter(active=True).order_by("credits", "id"):
        renders = pack.renders
        per_render = f"{pack.price / renders / 100:.2f} {pack.currency.upper()}" if renders else "—"
        prices.append(PackPrice(pack.name, pack.credits, renders, pack.price_display, per_render))
    return prices


@require_GET
def landing(request: HttpRequest) -> HttpResponse:
    """Public. Signed-in users see the same page with a button to their dashboard."""
    grant = int(settings.SIGNUP_GRANT_CREDITS)
    return render_page(request, "landing.html", {
        "cost": settings.CREDITS_PER_RENDER,
        "packs": pack_prices(),
        "sample": landing_sample(),
        "signup_grant": grant,
        "signup_renders": grant // settings.CREDITS_PER_RENDER,
    })


@require_GET
def favicon(request: HttpRequest) -> HttpResponse:
    """Browsers ask for /favicon.ico whatever the page links; send them to the static file.

    A redirect rather than the bytes, so the file keeps its hashed, long-cached static
    URL; the redirect itself is cached for a day, not forever, since that URL changes
    with the icon.
    """
    response = HttpResponseRedirect(static(FAVICON_PATH))
    response["Cache-Control"] = f"public, max-age={FAVICON_MAX_AGE_SECONDS}"
    return response
