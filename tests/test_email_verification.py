"""The sign-up credits wait for a verified address, and each address gets them once.

Sign-ups go through the real form and the real (locmem) mail backend; the link is the
one in the e-mail.
"""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.core import mail, signing
from django.db import connections
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts import verification
from accounts.email_identity import canonical_email
from accounts.models import User
from billing import ledger
from billing.models import EntryKind, LedgerEntry, SignupGrant
from platform_site.limits import redis_client

PASSWORD = "correct-horse-battery"
GRANT = 220


@pytest.fixture(autouse=True)
def _grant(settings):
    settings.SIGNUP_GRANT_CREDITS = GRANT


def sign_up(email: str) -> tuple[Client, User, str]:
    """Signs up through the form; returns the signed-in browser, the user and the mailed link's path."""
    browser = Client()
    before = len(mail.outbox)
    response = browser.post("/signup/", {"email": email, "password": PASSWORD})
    assert response.status_code == 302, response.content.decode()
    user = User.objects.get(email=email.lower())
    assert len(mail.outbox) == before + 1
    return browser, user, link_in(mail.outbox[-1])


def link_in(message) -> str:
    return re.search(r"https?://[^/\s]+(/verify-email/[^\s/]+/)", message.body).group(1)


def credits(user: User) -> int:
    return ledger.balances(user).balance


def signup_entries(user: User) -> list[tuple[str, int]]:
    return list(LedgerEntry.objects.filter(account__user=user, kind=EntryKind.GRANT).values_list("reference", "amount"))


def test_a_new_account_has_no_credits_until_its_address_is_verified(db):
    browser, user, _ = sign_up("new.person@example.com")

    assert credits(user) == 0 and user.email_verified_at is None
    message = mail.outbox[-1]
    assert message.to == ["new.person@example.com"] and "220 free sign-up credits" in message.body
    overview = browser.get(reverse("console:overview")).content.decode()
    assert 'data-testid="verify-email-notice"' in overview
    assert "Verify your e-mail address to receive your 220 free sign-up credits (10 renders)" in overview
    assert "We sent a link to new.person@example.com" in overview


def test_an_unverified_account_can_sign_in_see_the_dashboard_and_make_keys(db):
    browser, user, _ = sign_up("keys.first@example.com")
    browser.post("/logout/")
    assert browser.post("/login/", {"username": "keys.first@example.com", "password": PASSWORD}).status_code == 302

    assert browser.get(reverse("console:overview")).status_code == 200
    assert browser.get(reverse("billing:index")).status_code == 200
    assert browser.post("/dashboard/keys/", {"name": "ci"}).status_code == 302
    assert user.api_keys.count() == 1


def test_opening_the_link_verifies_the_address_and_grants_the_credits_once(db):
    browser, user, link = sign_up("verify.me@example.com")

    response = browser.get(link)

    assert response.status_code == 302 and response["Location"] == reverse("console:overview")
    user.refresh_from_db()
    assert user.email_verified_at is not None
    assert credits(user) == GRANT
    assert signup_entries(user) == [(f"signup:{user.pk}", GRANT)]
    assert SignupGrant.objects.get(user=user).address == "verify.me@example.com"
    page = browser.get(reverse("console:overview")).content.decode()
    assert "Your e-mail address is verified." in page and 'data-testid="verify-email-notice"' not in page


def test_a_replayed_link_changes_nothing(db):
    browser, user, link = sign_up("replay@example.com")
    browser.get(link)

    again = browser.get(link, follow=True)
    anonymous = Client().get(link)

    assert "already verified; this link changes nothing" in again.content.decode()
    assert anonymous.status_code == 302 and anonymous["Location"] == reverse("login")
    assert credits(user) == GRANT and len(signup_entries(user)) == 1


def test_an_expired_link_changes_nothing(db, settings, monkeypatch):
    user = User.objects.create_user("late@example.com", PASSWORD)
    four_days_ago = time.time() - 4 * 24 * 3600
    monkeypatch.setattr(signing.time, "time", lambda: four_days_ago)
    link = reverse("verify-email", args=[verification.make_token(user)])
    monkeypatch.undo()

    browser = Client()
    browser.force_login(user)
    response = browser.get(link)

    assert response.status_code == 410 and "This link has expired" in response.content.decode()
    assert "Send the link again" in response.content.decode()
    user.refresh_from_db()
    assert user.email_verified_at is None and credits(user) == 0


@pytest.mark.parametrize("mangle", [lambda t: t[:-3], lambda t: t + "x", lambda t: "A" + t[1:]])
def test_a_forged_or_truncated_link_is_refused(db, mangle):
    user = User.objects.create_user("forged@example.com", PASSWORD)
    response = Client().get(reverse("verify-email", args=[mangle(verification.make_token(user))]))
    assert response.status_code == 400 and "This link is not valid" in response.content.decode()
    user.refresh_from_db()
    assert user.email_verified_at is None and credits(user) == 0


def test_a_link_made_for_another_salt_is_refused(db):
    user = User.objects.create_user("salted@example.com", PASSWORD)
    token = signing.dumps({"u": user.pk, "e": user.email}, salt="something-else")
    assert Client().get(reverse("verify-email", args=[token])).status_code == 400
    assert credits(user) == 0


def test_a_link_for_an_address_that_has_changed_since_is_refused(db):
    user = User.objects.create_user("before@example.com", PASSWORD)
    token = verification.make_token(user)
    user.email = "after@example.com"
    user.save()

    assert Client().get(reverse("verify-email", args=[token])).status_code == 400
    user.refresh_from_db()
    assert user.email_verified_at is None and credits(user) == 0


@pytest.mark.parametrize("variant", [
    "alice+farm1@gmail.com",
    "ALICE+second.account@Gmail.com",
    "a.l.i.c.e@googlemail.com",
])
def test_case_and_plus_tag_variants_get_no_second_grant(db, variant):
    first_browser, first, first_link = sign_up("alice@gmail.com")
    first_browser.get(first_link)
    assert credits(first) == GRANT

    browser, second, link = sign_up(variant)
    browser.get(link)

    second.refresh_from_db()
    assert second.email_verified_at is not None
    assert credits(second) == 0 and signup_entries(second) == []
    assert "already given to another account with this e-mail address" in \
        browser.get(reverse("billing:index")).content.decode()
    assert SignupGrant.objects.count() == 1


def test_the_same_address_in_another_case_cannot_even_sign_up_again(db):
    browser, first, link = sign_up("dora@example.com")
    browser.get(link)
    response = Client().post("/signup/", {"email": "DORA@Example.com", "password": PASSWORD})
    assert "already exists" in response.content.decode()
    assert User.objects.filter(email__iexact="dora@example.com").count() == 1


def test_a_plus_tag_on_a_domain_we_know_nothing_about_is_another_address(db):
    for email in ("bob@example.com", "bob+work@example.com"):
        browser, user, link = sign_up(email)
        browser.get(link)
        assert credits(user) == GRANT


@pytest.mark.parametrize("address,canonical", [
    ("Alice@Example.COM", "alice@example.com"),
    ("alice+tag@gmail.com", "alice@gmail.com"),
    ("a.li.ce+x+y@googlemail.com", "alice@gmail.com"),
    ("first.last+news@outlook.com", "first.last@outlook.com"),
    ("someone+tag@icloud.com", "someone@icloud.com"),
    ("team+billing@example.org", "team+billing@example.org"),
    ("  Padded@Example.com ", "padded@example.com"),
])
def test_canonical_addresses(address, canonical):
    assert canonical_email(address) == canonical


def test_an_account_created_verified_gets_its_grant_at_once(db):
    user = User.objects.create_user("staff.made@example.com", PASSWORD, email_verified_at=timezone.now())
    assert credits(user) == GRANT


def test_staff_verifying_an_address_in_the_admin_grants_the_credits_once(db):
    user = User.objects.create_user("manual@example.com", PASSWORD)
    boss = User.objects.create_superuser("boss.verifies@example.com", PASSWORD)
    admin = Client()
    admin.force_login(boss)
    page = admin.get(reverse("admin:accounts_user_change", args=[user.pk]))
    assert page.status_code == 200 and "email_verified_at" in page.content.decode()

    user.email_verified_at = timezone.now()
    user.save()
    user.save()

    assert credits(user) == GRANT and len(signup_entries(user)) == 1


def test_signing_in_does_not_grant_anything_to_an_unverified_account(db):
    User.objects.create_user("not.yet@example.com", PASSWORD)
    browser = Client()
    browser.post("/login/", {"username": "not.yet@example.com", "password": PASSWORD})
    assert credits(User.objects.get(email="not.yet@example.com")) == 0


def test_the_link_can_be_sent_again_until_the_hourly_limit(db, settings):
    settings.VERIFICATION_EMAILS_PER_ACCOUNT_PER_HOUR = 2
    browser, user, _ = sign_up("resend@example.com")
    redis_client().delete(f"throttle:verify-mail:user:{user.pk}")

    sent = [browser.post(reverse("send-verification")) for _ in range(2)]
    refused = browser.post(reverse("send-verification"))

    assert [r.status_code for r in sent] == [302, 302]
    assert len(mail.outbox) == 3  # the sign-up's and two more
    assert refused.status_code == 429 and int(refused["Retry-After"]) > 0
    assert "Too many verification e-mail attempts" in refused.content.decode()
    browser.get(link_in(mail.outbox[-1]))
    assert credits(user) == GRANT


def test_a_mail_outage_does_not_lose_the_account(db, settings, monkeypatch):
    def broken(*args, **kwargs):
        raise ConnectionRefusedError("smtp down")

    monkeypatch.setattr(verification, "send_mail", broken)
    browser = Client()
    response = browser.post("/signup/", {"email": "nomail@example.com", "password": PASSWORD}, follow=True)
    assert response.status_code == 200 and "could not send the verification e-mail" in response.content.decode()
    assert User.objects.filter(email="nomail@example.com").exists()


@pytest.mark.django_db(transaction=True)
def test_two_aliases_verified_at_the_same_moment_get_one_grant():
    users = [User.objects.create_user(email, PASSWORD) for email in ("carol@gmail.com", "carol+2@gmail.com",
                                                                      "c.arol@gmail.com", "CAROL+x@gmail.com")]
    tokens = [verification.make_token(u) for u in users]
    barrier = threading.Barrier(len(users))

    def verify(i: int) -> str:
        try:
            barrier.wait(timeout=10)
            return verification.verify(tokens[i]).outcome
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=len(users)) as pool:
        outcomes = list(pool.map(verify, range(len(users))))

    assert outcomes == ["verified"] * len(users)
    assert sorted(credits(u) for u in users) == [0, 0, 0, GRANT]
    assert SignupGrant.objects.count() == 1
