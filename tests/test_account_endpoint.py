"""GET /v1/account reports the key owner's credits as the ledger has them."""

from __future__ import annotations

import pytest
from django.utils import timezone

from accounts.keys import issue_key
from accounts.models import User
from billing import ledger


@pytest.fixture
def owner(db) -> User:
    return User.objects.create_user("owner@example.com", "a-long-password-1", email_verified_at=timezone.now())


def get_account(client, raw_key: str):
    return client.get("/v1/account", HTTP_AUTHORIZATION=f"Bearer {raw_key}")


def test_it_reports_available_and_held_credits_after_a_reservation(client, owner, settings):
    _, raw = issue_key(owner, "ci")
    before = ledger.balances(owner)
    ledger.reserve(owner, 22, reference="rnd_account_test")

    body = get_account(client, raw).json()

    assert body["credits_held"] == before.held + 22
    assert body["credits_available"] == before.available - 22


def test_a_new_user_sees_their_signup_grant(client, owner, settings):
    _, raw = issue_key(owner, "ci")

    body = get_account(client, raw).json()

    assert body["credits_available"] == settings.SIGNUP_GRANT_CREDITS
    assert body["credits_held"] == 0
