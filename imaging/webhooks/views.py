"""The console's Webhooks pages: endpoints, each one's delivery log, and their actions.

Same access rules as the rest of the console: sign-in required, and another user's
endpoint or delivery is answered 404 (never 403), so ids cannot be probed. Every
change is a CSRF-protected POST that redirects back (post/redirect/get).
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.shortcuts import render as render_page
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from imaging.webhooks import events
from imaging.webhooks.forms import EndpointForm
from imaging.webhooks.models import WebhookDelivery, WebhookEndpoint, new_secret

DELIVERIES_PER_PAGE = 25
# The secret of an endpoint just created or rolled, until the next page view shows it.
NEW_SECRET_SESSION_KEY = "webhooks:new-secret"


def owned_endpoint(request: HttpRequest, public_id: str) -> WebhookEndpoint:
    endpoint = WebhookEndpoint.objects.filter(public_id=public_id, user_id=request.user.pk).first()
    if endpoint is None:
        raise Http404("No such webhook endpoint.")
    return endpoint


def _no_store(response: HttpResponse) -> HttpResponse:
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_http_methods(["GET", "POST"])
def endpoints(request: HttpRequest) -> HttpResponse:
    """Lists the user's endpoints; POST adds one and shows its secret once."""
    mine = WebhookEndpoint.objects.filter(user_id=request.user.pk)
    at_limit = mine.count() >= settings.WEBHOOK_MAX_ENDPOINTS
    form = EndpointForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        if at_limit:
            form.add_error(None, f"You have {settings.WEBHOOK_MAX_ENDPOINTS} endpoints, the most allowed.")
        else:
            endpoint = WebhookEndpoint.objects.create(
                user=request.user, url=form.cleaned_data["url"], description=form.cleaned_data["description"],
                events=list(form.cleaned_data["events"]))
            request.session[NEW_SECRET_SESSION_KEY] = {"endpoint": endpoint.public_id, "secret": endpoint.secret}
            return redirect("console:webhook-detail", public_id=endpoint.public_id)
    return _no_store(render_page(request, "console/webhooks.html", {
        "form": form, "endpoints": list(mine), "at_limit": at_limit,
        "max_endpoints": settings.WEBHOOK_MAX_ENDPOINTS,
    }))


@login_required
@require_GET
def detail(request: HttpRequest, public_id: str) -> HttpResponse:
    """One endpoint: its settings, its secret (once, right after it was made) and its log."""
    endpoint = owned_endpoint(request, public_id)
    shown = request.session.get(NEW_SECRET_SESSION_KEY)
    new_secret_value = None
    if shown and shown.get("endpoint") == endpoint.public_id:
        new_secret_value = shown.get("secret")
        del request.session[NEW_SECRET_SESSION_KEY]
    deliveries = (WebhookDelivery.objects.filter(endpoint=endpoint)
                  .select_related("event", "event__render").order_by("-created_at", "-id"))
    page = Paginator(deliveries, DELIVERIES_PER_PAGE).get_page(request.GET.get("page"))
    now = timezone.now()
    return _no_store(render_page(request, "console/webhook_detail.html", {
        "endpoint": endpoint,
        "new_secret": new_secret_value,
        "previous_valid": len(endpoint.signing_secrets(now)) > 1,
        "page": page,
        "previous_hours": f"{float(settings.WEBHOOK_PREVIOUS_SECRET_HOURS):g}",
        "retry_hours": f"{float(settings.WEBHOOK_RETRY_HOURS):g}",
    }))


@login_required
@require_POST
def roll_secret(request: HttpRequest, public_id: str) -> HttpResponse:
    """A new secret; the old one keeps working for WEBHOOK_PREVIOUS_SECRET_HOURS."""
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.select_for_update().get(pk=owned_endpoint(request, public_id).pk)
        endpoint.previous_secret = endpoint.secret
        endpoint.previous_secret_expires_at = timezone.now() + timedelta(
            hours=float(settings.WEBHOOK_PREVIOUS_SECRET_HOURS))
        endpoint.secret = new_secret()
        endpoint.save(update_fields=["secret", "previous_secret", "previous_secret_expires_at"])
    request.session[NEW_SECRET_SESSION_KEY] = {"endpoint": endpoint.public_id, "secret": endpoint.secret}
    messages.success(request, "Rolled the signing secret. Deliveries are signed with both secrets until "
                              "the previous one expires.")
    return redirect("console:webhook-detail", public_id=endpoint.public_id)


@login_required
@require_POST
def toggle(request: HttpRequest, public_id: str) -> HttpResponse:
    endpoint = owned_endpoint(request, public_id)
    endpoint.enabled = not endpoint.enabled
    endpoint.save(update_fields=["enabled"])
    messages.success(request, "Endpoint enabled." if endpoint.enabled else
                     "Endpoint disabled: no new events are sent to it, and pending deliveries stop.")
    return redirect("console:webhook-detail", public_id=endpoint.public_id)


@login_required
@require_POST
def delete(request: HttpRequest, public_id: str) -> HttpResponse:
    endpoint = owned_endpoint(request, public_id)
    endpoint.delete()
    messages.success(request, f"Deleted the endpoint {endpoint.url} and its delivery log.")
    return redirect("console:webhooks")


@login_required
@require_POST
def send_test(request: HttpRequest, public_id: str) -> HttpResponse:
    endpoint = owned_endpoint(request, public_id)
    events.send_test_event(endpoint)
    messages.success(request, "Sent a test event (type ping). Its delivery is at the top of the log.")
    return redirect("console:webhook-detail", public_id=endpoint.public_id)


@login_required
@require_POST
def send_again(request: HttpRequest, public_id: str, delivery_id: int) -> HttpResponse:
    endpoint = owned_endpoint(request, public_id)
    previous = WebhookDelivery.objects.filter(pk=delivery_id, endpoint=endpoint).select_related("event").first()
    if previous is None:
        raise Http404("No such delivery.")
    events.send_again(previous)
    messages.success(request, f"Sending {previous.event.public_id} again, as a new delivery.")
    return redirect("console:webhook-detail", public_id=endpoint.public_id)
