"""Sign-in lockout and paced sign-up and password reset: 429 with Retry-After and a clear message.

Real Redis (the test's own). Each test sets small limits and uses its own client
addresses (all in 127.0.0.0/8, so they are distinct clients and still loopback).
"""

from __future__ import annotations

import time

import pytest
import redis
from django.contrib.auth import SESSION_KEY
from django.contrib.auth.signals import user_login_failed
from django.core import mail
from django.test import Client

from accounts.models import User
from platform_site import limits

PASSWORD = "correct-horse-battery"


@pytest.fixture(autouse=True)
def forget_counts(db):
    connection = limits.redis_client()
    for key in connection.scan_iter("throttle:*"):
        connection.delete(key)


def browser(ip: str) -> Client:
    return Client(REMOTE_ADDR=ip)


def sign_in(client: Client, email: str, password: str):
    return client.post("/login/", {"username": email, "password": password})


def signed_in(client: Client) -> bool:
    return SESSION_KEY in client.session


@pytest.fixture
def alice(db) -> User:
    return User.objects.create_user("alice@example.com", PASSWORD)


def test_the_attempt_after_n_failures_is_refused_even_with_the_right_password(alice, settings):
    settings.LOGIN_FAILURES_PER_ACCOUNT = 3
    settings.LOGIN_LOCKOUT_SECONDS = 900
    client = browser("127.0.0.11")

    failures = [sign_in(client, "alice@example.com", "wrong-guess").status_code for _ in range(3)]
    refused = sign_in(client, "alice@example.com", PASSWORD)

    assert failures == [200, 200, 200]
    assert refused.status_code == 429
    assert 890 <= int(refused["Retry-After"]) <= 900
    page = refused.content.decode()
    assert "Too many failed sign-in attempts for this account. Try again in 15 minutes" in page
    assert "reset your password" in page
    assert not signed_in(client)


def test_a_locked_account_is_locked_from_every_address_but_other_accounts_are_not(alice, settings):
    settings.LOGIN_FAILURES_PER_ACCOUNT = 2
    User.objects.create_user("bob@example.com", PASSWORD)
    for _ in range(2):
        sign_in(browser("127.0.0.12"), "alice@example.com", "wrong-guess")

    assert sign_in(browser("127.0.0.13"), "ALICE@example.com", PASSWORD).status_code == 429
    other = browser("127.0.0.12")
    assert sign_in(other, "bob@example.com", PASSWORD).status_code == 302 and signed_in(other)


def test_failures_from_one_address_lock_that_address_out_for_every_account(alice, settings):
    settings.LOGIN_FAILURES_PER_IP = 3
    client = browser("127.0.0.14")
    for name in ("x@example.com", "y@example.com", "z@example.com"):
        assert sign_in(client, name, "guess").status_code == 200

    refused = sign_in(client, "alice@example.com", PASSWORD)

    assert refused.status_code == 429 and "from your network" in refused.content.decode()
    assert int(refused["Retry-After"]) > 0
    elsewhere = browser("127.0.0.15")
    assert sign_in(elsewhere, "alice@example.com", PASSWORD).status_code == 302


def test_a_locked_out_guess_is_not_even_checked(alice, settings):
    settings.LOGIN_FAILURES_PER_ACCOUNT = 1
    checked = []

    def record(sender, credentials, **kwargs):
        checked.append(credentials.get("username"))

    user_login_failed.connect(record)
    try:
        sign_in(browser("127.0.0.16"), "alice@example.com", "wrong-guess")
        for _ in range(5):
            assert sign_in(browser("127.0.0.16"), "alice@example.com", "another-guess").status_code == 429
    finally:
        user_login_failed.disconnect(record)

    assert checked == ["alice@example.com"]


def test_the_lockout_ends_with_its_window(alice, settings):
    settings.LOGIN_FAILURES_PER_ACCOUNT = 1
    settings.LOGIN_LOCKOUT_SECONDS = 1
    client = browser("127.0.0.17")
    sign_in(client, "alice@example.com", "wrong-guess")
    assert sign_in(client, "alice@example.com", PASSWORD).status_code == 429

    time.sleep(1.1)

    assert sign_in(client, "alice@example.com", PASSWORD).status_code == 302 and signed_in(client)


def test_signing_in_clears_the_accounts_count_but_not_the_addresss(alice, settings):
    settings.LOGIN_FAILURES_PER_ACCOUNT = 2
    settings.LOGIN_FAILURES_PER_IP = 3
    client = browser("127.0.0.18")
    sign_in(client, "alice@example.com", "wrong-guess")           # account 1, address 1
    assert sign_in(client, "alice@example.com", PASSWORD).status_code == 302
    client.post("/logout/")
    sign_in(client, "alice@example.com", "wrong-again")           # account 1 (not 2), address 2

    assert sign_in(client, "alice@example.com", PASSWORD).status_code == 302
    client.post("/logout/")
    sign_in(client, "alice@example.com", "wrong-again")           # account 1, address 3

    refused = sign_in(client, "alice@example.com", PASSWORD)
    assert refused.status_code == 429 and "from your network" in refused.content.decode()


def test_sign_up_is_paced_per_address(db, settings):
    settings.SIGNUPS_PER_IP_PER_HOUR = 2
    client = browser("127.0.0.21")
    first = client.post("/signup/", {"email": "one@example.com", "password": PASSWORD})
    Client(REMOTE_ADDR="127.0.0.21").post("/signup/", {"email": "two@example.com", "password": PASSWORD})

    refused = browser("127.0.0.21").post("/signup/", {"email": "three@example.com", "password": PASSWORD})

    assert first.status_code == 302
    assert refused.status_code == 429 and 1 <= int(refused["Retry-After"]) <= 1800
    assert "Too many sign-up attempts" in refused.content.decode()
    assert not User.objects.filter(email="three@example.com").exists()
    assert browser("127.0.0.22").post("/signup/", {"email": "four@example.com", "password": PASSWORD}).status_code == 302


def test_sign_up_is_paced_per_e_mail_address_and_its_aliases(db, settings):
    settings.SIGNUPS_PER_ADDRESS_PER_HOUR = 1
    browser("127.0.0.23").post("/signup/", {"email": "farm@gmail.com", "password": "short"})  # refused by the form

    refused = browser("127.0.0.24").post("/signup/", {"email": "farm+1@gmail.com", "password": PASSWORD})

    assert refused.status_code == 429
    assert not User.objects.filter(email__startswith="farm").exists()


def test_password_reset_is_paced_per_account_and_says_the_same_for_unknown_addresses(alice, settings):
    settings.PASSWORD_RESETS_PER_ACCOUNT_PER_HOUR = 2
    for email in ("alice@example.com", "nobody@example.com"):
        answers = [browser(f"127.0.0.{30 + i}").post("/password-reset/", {"email": email}) for i in range(3)]
        assert [a.status_code for a in answers] == [302, 302, 429], email
        assert "Too many password reset attempts" in answers[-1].content.decode()
        assert int(answers[-1]["Retry-After"]) > 0
    assert len(mail.outbox) == 2  # alice's two; nothing for the unknown address


def test_password_reset_is_paced_per_client_address(alice, settings):
    settings.PASSWORD_RESETS_PER_IP_PER_HOUR = 1
    client = browser("127.0.0.40")
    assert client.post("/password-reset/", {"email": "alice@example.com"}).status_code == 302
    assert client.post("/password-reset/", {"email": "someone@example.com"}).status_code == 429


def test_behind_a_trusted_proxy_the_forwarded_address_is_counted(alice, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    settings.LOGIN_FAILURES_PER_IP = 1
    proxy = "127.0.0.50"
    sign_in(Client(REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR="203.0.113.7"), "x@example.com", "guess")

    assert sign_in(Client(REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR="203.0.113.7"),
                   "alice@example.com", PASSWORD).status_code == 429
    # Another client behind the same proxy; a forged left-hand entry changes nothing.
    assert sign_in(Client(REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR="203.0.113.7, 203.0.113.8"),
                   "alice@example.com", PASSWORD).status_code == 302


def test_without_a_trusted_proxy_a_forwarded_header_is_ignored(alice, settings):
    settings.LOGIN_FAILURES_PER_IP = 1
    sign_in(Client(REMOTE_ADDR="127.0.0.51", HTTP_X_FORWARDED_FOR="198.51.100.1"), "x@example.com", "guess")
    client = Client(REMOTE_ADDR="127.0.0.51", HTTP_X_FORWARDED_FOR="198.51.100.2")
    assert sign_in(client, "alice@example.com", PASSWORD).status_code == 429


def test_signing_in_keeps_working_when_redis_is_down(alice, settings, monkeypatch):
    settings.LOGIN_FAILURES_PER_ACCOUNT = 1

    def down(*args, **kwargs):
        raise redis.ConnectionError("Redis is down")

    monkeypatch.setattr(limits, "_script", lambda source: down)
    client = browser("127.0.0.60")
    sign_in(client, "alice@example.com", "wrong-guess")
    assert sign_in(client, "alice@example.com", PASSWORD).status_code == 302 and signed_in(client)
