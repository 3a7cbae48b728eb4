"""Sign up, sign in, sign out, password reset, and the development demo account."""

from __future__ import annotations

import io
import re

import pytest
from django.contrib.auth import SESSION_KEY
from django.core import mail
from django.core.management import call_command
from django.core.management.base import CommandError

from accounts.models import User

PASSWORD = "correct-horse-battery"


@pytest.fixture
def alice(db) -> User:
    return User.objects.create_user("alice@example.com", PASSWORD)


def signed_in_user_id(client) -> int | None:
    value = client.session.get(SESSION_KEY)
    return int(value) if value is not None else None


def test_signing_up_creates_the_account_and_signs_it_in(client, db):
    response = client.post("/signup/", {"email": "New.User@Example.COM", "password": PASSWORD})

    assert response.status_code == 302 and response["Location"] == "/dashboard/"
    user = User.objects.get()
    assert user.email == "new.user@example.com"
    assert user.check_password(PASSWORD) and not user.is_staff
    assert signed_in_user_id(client) == user.pk
    assert client.get("/dashboard/").status_code == 200


def test_signing_up_again_with_the_same_address_in_other_case_is_refused(client, alice):
    response = client.post("/signup/", {"email": "ALICE@example.com", "password": PASSWORD})

    assert response.status_code == 200
    assert "already exists" in response.content.decode()
    assert User.objects.count() == 1
    assert signed_in_user_id(client) is None


@pytest.mark.parametrize("password", ["short", "12345678901", "password123", "alice-example"])
def test_signing_up_with_a_weak_password_is_refused(client, db, password):
    response = client.post("/signup/", {"email": "alice@example.com", "password": password})

    assert response.status_code == 200
    assert 'aria-invalid="true"' in response.content.decode()
    assert not User.objects.exists()


def test_signing_in_with_the_right_password_works_in_any_case(client, alice):
    response = client.post("/login/", {"username": "Alice@Example.com", "password": PASSWORD})

    assert response.status_code == 302 and response["Location"] == "/dashboard/"
    assert signed_in_user_id(client) == alice.pk


def test_signing_in_returns_to_the_page_that_asked_for_it(client, alice):
    response = client.post(
        "/login/", {"username": "alice@example.com", "password": PASSWORD, "next": "/dashboard/keys/"}
    )
    assert response["Location"] == "/dashboard/keys/"


def test_a_wrong_password_does_not_sign_in(client, alice):
    response = client.post("/login/", {"username": "alice@example.com", "password": "wrong-one"})

    assert response.status_code == 200
    assert "correct e-mail" in response.content.decode()
    assert signed_in_user_id(client) is None


def test_a_deactivated_user_cannot_sign_in(client, alice):
    alice.is_active = False
    alice.save()

    client.post("/login/", {"username": "alice@example.com", "password": PASSWORD})

    assert signed_in_user_id(client) is None


def test_signing_out_takes_a_post_and_ends_the_session(client, alice):
    client.force_login(alice)

    assert client.get("/logout/").status_code == 405
    assert signed_in_user_id(client) == alice.pk

    response = client.post("/logout/")

    assert response.status_code == 302 and response["Location"] == "/login/"
    assert signed_in_user_id(client) is None
    assert client.get("/dashboard/").status_code == 302


def test_a_password_reset_mails_a_link_that_sets_a_new_password(client, alice):
    response = client.post("/password-reset/", {"email": "alice@example.com"})
    assert response.status_code == 302 and response["Location"] == "/password-reset/sent/"

    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["alice@example.com"]
    link = re.search(r"https?://[^/\s]+(/password-reset/[^\s]+/[^\s]+/)", message.body).group(1)

    form_page = client.get(link, follow=True)
    assert "Choose a new password" in form_page.content.decode()
    done = client.post(
        form_page.redirect_chain[-1][0],
        {"new_password1": "a-brand-new-password", "new_password2": "a-brand-new-password"},
    )

    assert done.status_code == 302 and done["Location"] == "/password-reset/complete/"
    alice.refresh_from_db()
    assert alice.check_password("a-brand-new-password")
    assert client.get(link, follow=True).content.decode().count("no longer works") == 1


def test_a_password_reset_for_an_unknown_address_sends_nothing_and_says_the_same(client, alice):
    response = client.post("/password-reset/", {"email": "nobody@example.com"})

    assert response.status_code == 302 and response["Location"] == "/password-reset/sent/"
    assert mail.outbox == []


def test_the_demo_account_is_created_once_as_staff_and_can_sign_in(client, db, settings, tmp_path):
    settings.DEBUG = True
    first, second = io.StringIO(), io.StringIO()

    call_command("ensure_demo_account", stdout=first, key_file=str(tmp_path / "key"))
    call_command("ensure_demo_account", stdout=second, key_file=str(tmp_path / "key"))

    user = User.objects.get(email="demo@example.com")
    assert user.is_staff and user.check_password("demo-password")
    assert "demo@example.com" in first.getvalue() and "demo-password" in first.getvalue()
    assert "already exists" in second.getvalue()
    assert User.objects.filter(email="demo@example.com").count() == 1
    client.post("/login/", {"username": "demo@example.com", "password": "demo-password"})
    assert signed_in_user_id(client) == user.pk


def test_the_demo_account_gets_its_credits_once(db, settings, tmp_path):
    ledger = pytest.importorskip("billing.ledger")
    settings.DEBUG = True

    call_command("ensure_demo_account", stdout=io.StringIO(), key_file=str(tmp_path / "key"))
    user = User.objects.get(email="demo@example.com")
    after_first = ledger.balances(user)
    call_command("ensure_demo_account", stdout=io.StringIO(), key_file=str(tmp_path / "key"))

    assert ledger.balances(user) == after_first
    assert after_first.available >= 100 * settings.CREDITS_PER_RENDER


def test_the_demo_account_keeps_a_working_api_key_in_its_key_file(db, settings, tmp_path):
    from accounts.keys import authenticate_key, revoke_key

    settings.DEBUG = True
    path = tmp_path / "var" / "demo-api-key"

    call_command("ensure_demo_account", stdout=io.StringIO(), key_file=str(path))
    first = path.read_text().strip()
    key = authenticate_key(first)
    assert key is not None and key.user.email == "demo@example.com"
    assert path.stat().st_mode & 0o777 == 0o600
    call_command("ensure_demo_account", stdout=io.StringIO(), key_file=str(path))
    assert path.read_text().strip() == first  # a working key is kept, not piled up

    revoke_key(key)
    call_command("ensure_demo_account", stdout=io.StringIO(), key_file=str(path))
    second = path.read_text().strip()
    assert second != first and authenticate_key(second) is not None


def test_the_demo_account_is_refused_outside_development(db, settings):
    settings.DEBUG = False

    with pytest.raises(CommandError, match="development only"):
        call_command("ensure_demo_account", stdout=io.StringIO())

    assert not User.objects.filter(email="demo@example.com").exists()
