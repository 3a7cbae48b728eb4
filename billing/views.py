"""Billing pages (balance, packs, ledger, purchase status) and the Stripe webhook."""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from billing import ledger, signup_grants, stripe_gateway, webhooks
from billing.models import CreditPack, LedgerEntry, Purchase, PurchaseStatus

log = logging.getLogger(__name__)

ENTRIES_PER_PAGE = 25

# Shown after a redirect back from checkout; an unknown value shows nothing.
CHECKOUT_NOTICES = {
    "canceled": "Checkout was canceled. Nothing was charged.",
    "unavailable": "Purchases are unavailable right now. Nothing was charged.",
    "failed": "We could not start the checkout. Nothing was charged; please try again.",
}


def _entries(user: Any):
    return LedgerEntry.objects.filter(account__user=user).order_by("-id")


@login_required
@require_GET
def index(request: HttpRequest) -> HttpResponse:
    credits = ledger.balances(request.user)
    page = Paginator(_entries(request.user), ENTRIES_PER_PAGE).get_page(request.GET.get("page"))
    return render(
        request,
        "billing/index.html",
        {
            "credits": credits,
            "render_cost": settings.CREDITS_PER_RENDER,
            "renders_available": credits.available // settings.CREDITS_PER_RENDER,
            "packs": CreditPack.objects.filter(active=True),
            "purchases_enabled": stripe_gateway.is_configured(),
            "page": page,
            "notice": CHECKOUT_NOTICES.get(request.GET.get("checkout", "")),
            "recent_purchases": Purchase.objects.filter(user=request.user).select_related("pack")[:5],
            "signup_grant": str(signup_grants.status(request.user)),
        },
    )


@login_required
@require_POST
def checkout(request: HttpRequest) -> HttpResponse:
    """Opens a Stripe Checkout Session for one pack and sends the browser there (303).

    The purchase row comes first so the webhook can always find it, even if this
    process dies between Stripe's answer and our save.
    """
    back = reverse("billing:index")
    if not stripe_gateway.is_configured():
        return redirect(f"{back}?checkout=unavailable")
    pack_id = request.POST.get("pack", "")
    if not pack_id.isdigit():
        return HttpResponse("Choose a credit pack.", status=400)
    pack = get_object_or_404(CreditPack, pk=int(pack_id), active=True)
    purchase = Purchase.objects.create(
        user=request.user, pack=pack, credits=pack.credits, amount=pack.price, currency=pack.currency
    )
    try:
        session = stripe_gateway.gateway().create_checkout_session(
            purchase, customer_email=getattr(request.user, "email", "")
        )
    except stripe_gateway.CheckoutUnavailable as exc:
        log.warning("checkout for purchase %s failed: %s", purchase.client_reference_id, exc)
        purchase.status = PurchaseStatus.FAILED
        purchase.updated_at = timezone.now()
        purchase.save(update_fields=["status", "updated_at"])
        return redirect(f"{back}?checkout=failed")
    purchase.stripe_checkout_session_id = session.id
    purchase.status = PurchaseStatus.OPEN
    purchase.updated_at = timezone.now()
    purchase.save(update_fields=["stripe_checkout_session_id", "status", "updated_at"])
    return HttpResponseRedirect(session.url, status=303)


@login_required
@require_GET
def purchase_status(request: HttpRequest, reference: str) -> HttpResponse:
    """Where Stripe sends the buyer back. It only reports; the webhook is what credits."""
    purchase = get_object_or_404(
        Purchase.objects.select_related("pack"), client_reference_id=reference, user=request.user
    )
    return render(request, "billing/purchase.html", {"purchase": purchase})


def _csv_safe(value: str) -> str:
    # A cell starting with one of these is a formula to spreadsheet programs.
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


class _Echo:
    def write(self, value: str) -> str:
        return value


@login_required
@require_GET
def ledger_csv(request: HttpRequest) -> StreamingHttpResponse:
    """The whole ledger of the signed-in user, newest first."""
    writer = csv.writer(_Echo())

    def rows() -> Iterator[str]:
        yield writer.writerow(["created_at", "kind", "amount", "balance_after", "reference", "note",
                               "owed_change", "owed_after"])
        for entry in _entries(request.user).iterator(chunk_size=500):
            yield writer.writerow([
                entry.created_at.isoformat(),
                entry.kind,
                entry.amount,
                entry.balance_after,
                _csv_safe(entry.reference),
                _csv_safe(entry.note),
                entry.owed_change,
                entry.owed_after,
            ])

    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="ledger.csv"'
    return response


@csrf_exempt
@require_POST
def stripe_webhook(request: HttpRequest) -> JsonResponse:
    """Stripe's deliveries. 2xx tells Stripe to stop; anything else makes it retry."""
    secret = settings.STRIPE_WEBHOOK_SECRET
    if not secret:
        return JsonResponse({"error": "webhooks are not configured"}, status=503)
    try:
        event = webhooks.verify(request.body, request.headers.get("Stripe-Signature"), secret)
        outcome = webhooks.handle(event)
    except webhooks.InvalidWebhook as exc:
        log.warning("rejected stripe webhook: %s", exc)
        return JsonResponse({"error": str(exc)}, status=400)
    return JsonResponse({"received": True, "outcome": outcome})
