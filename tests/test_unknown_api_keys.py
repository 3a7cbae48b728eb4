"""Guessing API keys: unknown keys are counted per client address and, past the limit,
refused from Redis alone, before any database query.

Queries are counted with Django's CaptureQueriesContext on the test's own database;
the keys are well-formed (right shape and checksum), so each would otherwise cost one
indexed lookup.
"""

from __future__ import annotations

import pytest
import redis
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from accounts import keys
from accounts.keys import issue_key
from accounts.models import User
from platform_site import limits

LIMIT = 5


@pytest.fixture(autouse=True)
def small_limit(db, settings):
    settings.API_UNKNOWN_KEYS_PER_MINUTE_PER_IP = LIMIT
    connection_ = limits.redis_client()
    for key in connection_.scan_iter("throttle:api-unknown-keys:*"):
        connection_.delete(key)


def ask(raw: str, ip: str) -> tuple[int, int, object]:
    """GET /v1/account with ``raw`` from ``ip``: (status, queries it cost, response)."""
    client = Client(REMOTE_ADDR=ip, headers={"Authorization": f"Bearer {raw}"})
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/v1/account")
    return response.status_code, len(queries.captured_queries), response


def test_garbage_keys_from_one_address_are_throttled_without_database_queries():
    answers = [ask(keys.generate_key(), "127.0.0.71") for _ in range(LIMIT + 20)]

    counted, throttled = answers[:LIMIT], answers[LIMIT:]
    assert [(status, queries) for status, queries, _ in counted] == [(401, 1)] * LIMIT
    assert [(status, queries) for status, queries, _ in throttled] == [(429, 0)] * 20
    refusal = throttled[0][2]
    assert refusal.json()["error"]["code"] == "rate_limited"
    assert "unknown API keys from your address" in refusal.json()["error"]["message"]
    assert 1 <= int(refusal["Retry-After"]) <= 60


def test_other_addresses_are_not_throttled_by_one_guesser():
    for _ in range(LIMIT):
        ask(keys.generate_key(), "127.0.0.72")
    user = User.objects.create_user("honest@example.com", "pw-123456789")
    _, raw = issue_key(user, "honest")

    assert ask(raw, "127.0.0.73")[0] == 200
    assert ask(keys.generate_key(), "127.0.0.73")[:2] == (401, 1)


def test_a_throttled_address_is_refused_even_with_a_valid_key_until_the_window_ends():
    user = User.objects.create_user("shared-nat@example.com", "pw-123456789")
    _, raw = issue_key(user, "office")
    for _ in range(LIMIT):
        ask(keys.generate_key(), "127.0.0.74")

    status, queries, _ = ask(raw, "127.0.0.74")

    # The price of refusing before the lookup: the address, not the key, is throttled.
    assert (status, queries) == (429, 0)


def test_malformed_keys_cost_no_query_and_are_not_counted():
    user = User.objects.create_user("typo@example.com", "pw-123456789")
    _, raw = issue_key(user, "typo")
    broken = raw[:-1] + ("A" if raw[-1] != "A" else "B")

    answers = [ask(broken, "127.0.0.75") for _ in range(3 * LIMIT)]

    assert {(status, queries) for status, queries, _ in answers} == {(401, 0)}
    assert ask(raw, "127.0.0.75")[0] == 200


def test_with_redis_down_unknown_keys_are_still_refused_and_valid_ones_work(monkeypatch):
    def down(*args, **kwargs):
        raise redis.ConnectionError("Redis is down")

    monkeypatch.setattr(limits, "_script", lambda source: down)
    monkeypatch.setattr("imaging.ratelimit.rate_wait", down)
    user = User.objects.create_user("outage@example.com", "pw-123456789")
    _, raw = issue_key(user, "outage")

    assert [ask(keys.generate_key(), "127.0.0.76")[0] for _ in range(LIMIT + 2)] == [401] * (LIMIT + 2)
    assert ask(raw, "127.0.0.76")[0] == 200
