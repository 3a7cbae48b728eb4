"""Staff pages: usage across all accounts, and one account's money and renders.

Read-only. Money changes only through the ledger's audited admin action; these pages
link there instead of offering buttons of their own.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.shortcuts import render as render_page
from django.views.decorators.http import require_GET

from billing import ledger
from billing.models import CreditAccount, Hold, LedgerEntry, PaymentReversal, Purchase, ReversalKind
from billing.reversals import DISPUTE_FINAL
from imaging.dashboard import stats
from imaging.dashboard.access import staff_required
from imaging.dashboard.chart import renders_chart
from imaging.dashboard.display import percent, seconds
from imaging.models import Render

WINDOWS = (7, 30, 90)
ENTRIES_PER_PAGE = 50
RECENT_ROWS = 50


@staff_required
@require_GET
def usage(request: HttpRequest) -> HttpResponse:
    email = request.GET.get("email", "").strip()
    if email:
        user = get_user_model().objects.filter(email__iexact=email).first()
        if user is not None:
            return redirect("console:staff-account", user_id=user.pk)
    try:
        days = int(request.GET.get("days", "30"))
    except ValueError:
        days = 30
    days = days if days in WINDOWS else 30
    numbers = stats.staff_usage(days)
    durations = numbers.durations
    return render_page(request, "console/staff_usage.html", {
        "numbers": numbers,
        "windows": WINDOWS,
        "chart": renders_chart(numbers.per_day),
        "success_rate": percent(numbers.outcomes.success_rate),
        "percentile_rows": [
            (f"p{p}", seconds(durations.end_to_end[p]), seconds(durations.processing[p]))
            for p in stats.PERCENTILES
        ],
        "queues": stats.queue_report(),
        "email": email,
        "email_not_found": bool(email),
        **money_at_risk(),
    })


def money_at_risk() -> dict:
    """Accounts that owe credits, and disputes not yet closed: two queries, however many."""
    return {
        "owing_accounts": list(CreditAccount.objects.filter(owed__gt=0).select_related("user")
                               .order_by("-owed", "pk")[:RECENT_ROWS]),
        "open_disputes": list(PaymentReversal.objects.filter(kind=ReversalKind.DISPUTE)
                              .exclude(status__in=DISPUTE_FINAL).select_related("purchase__user")
                              .order_by("-updated_at", "-pk")[:RECENT_ROWS]),
        "recent_rows": RECENT_ROWS,
    }


@staff_required
@require_GET
def account(request: HttpRequest, user_id: int) -> HttpResponse:
    user = get_object_or_404(get_user_model(), pk=user_id)
    entries = LedgerEntry.objects.filter(account__user=user).order_by("-id")
    page = Paginator(entries, ENTRIES_PER_PAGE).get_page(request.GET.get("page"))
    return render_page(request, "console/staff_account.html", {
        "account_user": user,
        "credits": ledger.balances(user),
        "outcomes": stats.outcomes(Render.objects.filter(user=user)),
        "page": page,
        "holds": Hold.objects.filter(account__user=user).order_by("-created_at", "-id")[:RECENT_ROWS],
        "purchases": Purchase.objects.filter(user=user).select_related("pack").order_by("-created_at")[:RECENT_ROWS],
        "reversals": PaymentReversal.objects.filter(purchase__user=user).select_related("purchase")
                     .order_by("-updated_at", "-pk")[:RECENT_ROWS],
        "renders": Render.objects.filter(user=user).select_related("api_key").order_by("-created_at")[:RECENT_ROWS],
        "recent_rows": RECENT_ROWS,
    })
