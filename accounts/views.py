"""Server-rendered pages: signup, the dashboard shell, API keys, usage and docs."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.core import signing
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from accounts.forms import ApiKeyCreateForm, SignupForm
from accounts.keys import ApiKeyLimitReached, hash_key, issue_key, revoke_key
from accounts.models import ApiKey, User

# The new key travels from the POST that created it to the page that shows it in a
# short-lived signed cookie, scoped to the keys page and deleted on first display. That
# way it is never stored server-side (no session row holds it), a reload after the
# redirect cannot show it again, and reloading cannot re-submit the form.
NEW_KEY_COOKIE = "new_api_key"
NEW_KEY_MAX_AGE_SECONDS = 120


def _new_key_salt(user: User) -> str:
    return f"accounts.new-api-key.{user.pk}"


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    """Creates an account from an e-mail and a password, then signs the user in."""
    if request.user.is_authenticated:
        return redirect("console:overview")
    form = SignupForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        user = _create_account(form)
        if user is not None:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            messages.success(request, "Welcome! Create an API key to make your first request.")
            return redirect("console:overview")
    return render(request, "accounts/signup.html", {"form": form})


def _create_account(form: SignupForm) -> User | None:
    """The new user, or None (with a form error) when the address was taken meanwhile.

    One transaction, so whatever other apps do when a user is created (billing opens
    the credit account and grants the signup credits) happens with it or not at all.
    """
    try:
        with transaction.atomic():
            return User.objects.create_user(
                form.cleaned_data["email"], form.cleaned_data["password"]
            )
    except IntegrityError:
        # Lost a race with a simultaneous signup for the same address.
        form.add_error("email", "An account with this e-mail address already exists.")
        return None



@login_required
@require_http_methods(["GET", "POST"])
def keys(request: HttpRequest) -> HttpResponse:
    """Lists the user's keys; POST creates one and redirects to show it once."""
    form = ApiKeyCreateForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            key, raw = issue_key(request.user, form.cleaned_data["name"])
        except ApiKeyLimitReached as error:
            form.add_error(None, str(error))
        else:
            response = redirect("keys")
            response.set_signed_cookie(
                NEW_KEY_COOKIE, f"{key.pk}:{raw}", salt=_new_key_salt(request.user),
                max_age=NEW_KEY_MAX_AGE_SECONDS, path=reverse("keys"),
                secure=request.is_secure() or settings.SESSION_COOKIE_SECURE,
                httponly=True, samesite="Strict",
            )
            return response

    new_key, raw = _take_new_key(request)
    all_keys = list(ApiKey.objects.filter(user=request.user).order_by("-created_at"))
    active = [k for k in all_keys if k.is_active]
    context = {
        "form": form,
        "new_key": new_key,
        "new_key_plaintext": raw,
        "active_keys": active,
        "revoked_keys": [k for k in all_keys if not k.is_active],
        "max_keys": settings.MAX_ACTIVE_API_KEYS,
        "at_limit": len(active) >= settings.MAX_ACTIVE_API_KEYS,
    }
    response = render(request, "dashboard/keys.html", context)
    if NEW_KEY_COOKIE in request.COOKIES:
        response.delete_cookie(NEW_KEY_COOKIE, path=reverse("keys"), samesite="Strict")
    # Nothing on this page (least of all a fresh key) belongs in any cache or bfcache.
    response["Cache-Control"] = "no-store"
    return response


def _take_new_key(request: HttpRequest) -> tuple[ApiKey | None, str | None]:
    """The key created by the previous POST, if its cookie is authentic and still fresh.

    Besides the signature, the plaintext must hash to an active key of this user, so a
    cookie can only ever reveal a key to the account that owns it.
    """
    try:
        value = request.get_signed_cookie(
            NEW_KEY_COOKIE, salt=_new_key_salt(request.user), max_age=NEW_KEY_MAX_AGE_SECONDS
        )
    except (KeyError, signing.BadSignature):
        return None, None
    key_id, _, raw = value.partition(":")
    key = ApiKey.objects.filter(
        pk=int(key_id) if key_id.isdigit() else 0, user=request.user, revoked_at__isnull=True
    ).first()
    if key is None or key.hashed_key != hash_key(raw):
        return None, None
    return key, raw


@login_required
@require_POST
def revoke(request: HttpRequest, key_id: int) -> HttpResponse:
    key = get_object_or_404(ApiKey, pk=key_id, user=request.user)
    if key.is_active:
        revoke_key(key)
        messages.success(request, f"Revoked “{key.name}” ({key.masked}). It no longer works.")
    return redirect("keys")

