"""The developer's overview: credits, this month's renders, a 30-day chart, the latest renders."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render as render_page
from django.views.decorators.http import require_GET

from accounts.models import ApiKey
from imaging.dashboard import stats
from imaging.dashboard.chart import renders_chart
from imaging.dashboard.display import percent, render_rows


@login_required
@require_GET
def overview(request: HttpRequest) -> HttpResponse:
    numbers = stats.user_overview(request.user)
    return render_page(request, "console/overview.html", {
        "numbers": numbers,
        "success_rate": percent(numbers.month.success_rate),
        "chart": renders_chart(numbers.per_day),
        "latest": render_rows(numbers.latest, request),
        "cost": settings.CREDITS_PER_RENDER,
        "renders_affordable": numbers.available // settings.CREDITS_PER_RENDER,
        "active_key_count": ApiKey.objects.filter(user_id=request.user.pk, revoked_at__isnull=True).count(),
        "max_keys": settings.MAX_ACTIVE_API_KEYS,
    })
