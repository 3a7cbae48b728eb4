"""Server-rendered pages: sign-up, e-mail verification, throttled sign-in and reset, API keys."""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core import signing
from django.core.exceptions import NON_FIELD_ERRORS
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import throttle, verification
from accounts.forms import ApiKeyCreateForm, EmailAuthenticationForm, SignupForm
from accounts.keys import ApiKeyLimitReached, hash_key, issue_key, revoke_key
from accounts.models import ApiKey, User
from platform_site.limits import retry_after

log = logging.getLogger(__name__)

# The new key travels from the POST that created it to the page that shows it in a
# short-lived signed cookie, scoped to the keys page and deleted on first display. That
# way it is never stored server-side (no session row holds it), a reload after the
# redirect cannot show it again, and reloading cannot re-submit the form.
NEW_KEY_COOKIE = "new_api_key"
NEW_KEY_MAX_AGE_SECONDS = 120


def _new_key_salt(user: User) -> str:
    return f"accounts.new-api-key.{user.pk}"


def _throttled(response: HttpResponse, refused: throttle.Throttled) -> HttpResponse:
    response.status_code = 429
    response["Retry-After"] = retry_after(refused.wait)
    return response


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    """Creates an account from an e-mail and a password, signs the user in and mails the
    verification link. The sign-up credits wait for that link (billing grants them)."""
    if request.user.is_authenticated:
        return redirect("console:overview")
    form = SignupForm(request.POST if request.method == "POST" else None)
    if request.method == "POST":
        try:
            throttle.check_signup(request, request.POST.get("email", ""))
        except throttle.Throttled as refused:
            page = render(request, "accounts/signup.html", {"form": SignupForm(), "throttled": refused.message})
            return _throttled(page, refused)
    if request.method == "POST" and form.is_valid():
        user = _create_account(form)
        if user is not None:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            _mail_link(request, user, first=True)
            return redirect("console:overview")
    return render(request, "accounts/signup.html", {"form": form})


def _mail_link(request: HttpRequest, user: User, *, first: bool) -> None:
    grant = getattr(settings, "SIGNUP_GRANT_CREDITS", 0)
    try:
        verification.send_verification_email(user)
    except Exception:  # noqa: BLE001 - a mail outage must not turn a sign-up into a 500
        log.exception("verification e-mail to user %s could not be sent", user.pk)
        messages.warning(request, "We could not send the verification e-mail just now; "
                                  "use “Send the link again” in a few minutes.")
        return
    reward = f" to receive your {grant} free credits" if grant > 0 else ""
    opening = "Welcome! " if first else ""
    messages.success(request, f"{opening}We sent a verification link to {user.email}: open it{reward}. "
                              "Meanwhile you can create API keys.")


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



@require_GET
def verify_email(request: HttpRequest, token: str) -> HttpResponse:
    """The link from the verification e-mail. Opening it again, or late, changes nothing."""
    result = verification.verify(token)
    if result.outcome in (verification.Outcome.VERIFIED, verification.Outcome.ALREADY_VERIFIED):
        if result.outcome == verification.Outcome.VERIFIED:
            messages.success(request, "Your e-mail address is verified.")
        else:
            messages.info(request, "Your e-mail address was already verified; this link changes nothing.")
        return redirect("console:overview" if request.user.is_authenticated else "login")
    status = 410 if result.outcome == verification.Outcome.EXPIRED else 400
    return render(request, "accounts/verify_email_failed.html",
                  {"expired": result.outcome == verification.Outcome.EXPIRED,
                   "hours": settings.EMAIL_VERIFICATION_MAX_AGE_SECONDS // 3600}, status=status)


@login_required
@require_POST
def send_verification(request: HttpRequest) -> HttpResponse:
    """Mails a fresh verification link (VERIFICATION_EMAILS_PER_ACCOUNT_PER_HOUR)."""
    user = request.user
    if user.email_verified_at is not None:
        messages.info(request, "Your e-mail address is already verified.")
        return redirect("console:overview")
    try:
        throttle.check_verification_email(user)
    except throttle.Throttled as refused:
        return _throttled(render(request, "accounts/throttled.html", {"message": refused.message}), refused)
    _mail_link(request, user, first=False)
    return redirect("console:overview")


class ThrottledLoginView(auth_views.LoginView):
    """Django's sign-in, refused while the address or the account is locked out.

    The lock is checked before the password is: a locked-out guesser learns nothing,
    even from the right password.
    """

    authentication_form = EmailAuthenticationForm
    redirect_authenticated_user = True

    def post(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        username = request.POST.get("username", "")
        try:
            throttle.check_login(request, username)
        except throttle.Throttled as refused:
            # An unbound form: rendering a bound one would validate it, i.e. try the password.
            form = self.get_form_class()(request, initial={"username": username})
            page = self.render_to_response(self.get_context_data(form=form, throttled=refused.message))
            return _throttled(page, refused)
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        if form.has_error(NON_FIELD_ERRORS, "invalid_login"):
            throttle.login_failed(self.request, self.request.POST.get("username", ""))
        return super().form_invalid(form)

    def form_valid(self, form):
        throttle.login_succeeded(self.request, self.request.POST.get("username", ""))
        return super().form_valid(form)


class ThrottledPasswordResetView(auth_views.PasswordResetView):
    """Django's password reset, paced per address and per account asked for."""

    def post(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        try:
            throttle.check_password_reset(request, request.POST.get("email", ""))
        except throttle.Throttled as refused:
            page = self.render_to_response(self.get_context_data(form=self.form_class(), throttled=refused.message))
            return _throttled(page, refused)
        return super().post(request, *args, **kwargs)


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

