"""Bearer-key authentication on the API, seen through GET /v1/account."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from accounts.keys import generate_key, issue_key, revoke_key
from accounts.models import ApiKey, User

ACCOUNT = "/v1/account"


@pytest.fixture
def alice(db) -> User:
    return User.objects.create_user("alice@example.com", "a-long-enough-password")


@pytest.fixture
def alice_key(alice) -> tuple[ApiKey, str]:
    return issue_key(alice, "production server")


def bearer(raw: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


def assert_rejected(response, code: str) -> dict:
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    body = response.json()
    assert set(body["error"]) == {"type", "code", "message", "param", "request_id"}
    assert body["error"]["code"] == code
    assert body["error"]["type"] == "authentication_error"
    assert body["error"]["request_id"] == response["X-Request-Id"]
    return body


def test_the_account_endpoint_answers_with_the_key_owner(client, alice, alice_key):
    key, raw = alice_key

    response = client.get(ACCOUNT, **bearer(raw))

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == alice.pk
    assert body["email"] == "alice@example.com"
    assert parse_datetime(body["created_at"]) == alice.date_joined
    assert body["key"] == {
        "name": "production server", "prefix": raw[:13], "last_four": raw[-4:],
    }
    assert response["X-Request-Id"].startswith("req_")


def test_the_scheme_name_is_case_insensitive(client, alice_key):
    _, raw = alice_key
    assert client.get(ACCOUNT, HTTP_AUTHORIZATION=f"bearer {raw}").status_code == 200


def test_a_request_without_a_key_gets_401_missing_api_key(client, db):
    assert_rejected(client.get(ACCOUNT), "missing_api_key")


def test_another_authorization_scheme_counts_as_no_key(client, db):
    assert_rejected(client.get(ACCOUNT, HTTP_AUTHORIZATION="Basic YWxpY2U6cHc="), "missing_api_key")


@pytest.mark.parametrize(
    "header",
    ["Bearer", "Bearer a b", "Bearer pxl_live_tooshort", "Bearer sk_live_" + "a" * 38],
)
def test_a_malformed_key_gets_401_without_a_query(client, db, header, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get(ACCOUNT, HTTP_AUTHORIZATION=header)
    body = assert_rejected(response, "invalid_api_key")
    assert "malformed" in body["error"]["message"]


def test_a_key_with_a_broken_checksum_gets_401_without_a_query(
    client, alice_key, django_assert_num_queries
):
    _, raw = alice_key
    typo = raw[:-1] + ("A" if raw[-1] != "A" else "B")

    with django_assert_num_queries(0):
        response = client.get(ACCOUNT, **bearer(typo))

    assert_rejected(response, "invalid_api_key")


def test_an_unknown_key_gets_401_with_a_challenge_and_the_error_body(client, alice_key):
    raw = generate_key()  # well-formed, never issued

    response = client.get(ACCOUNT, **bearer(raw))

    body = assert_rejected(response, "invalid_api_key")
    assert 'error="invalid_token"' in response["WWW-Authenticate"]
    assert raw not in response.content.decode()
    assert body["error"]["param"] is None


def test_a_revoked_key_fails_on_the_very_next_request(client, alice_key):
    key, raw = alice_key
    assert client.get(ACCOUNT, **bearer(raw)).status_code == 200

    revoke_key(key)

    assert_rejected(client.get(ACCOUNT, **bearer(raw)), "invalid_api_key")


def test_a_deactivated_users_key_is_refused(client, alice, alice_key):
    _, raw = alice_key
    alice.is_active = False
    alice.save()

    assert_rejected(client.get(ACCOUNT, **bearer(raw)), "invalid_api_key")


def test_a_signed_in_browser_session_is_not_an_api_credential(client, alice):
    client.force_login(alice)
    assert_rejected(client.get(ACCOUNT), "missing_api_key")


def _last_used_writes(queries) -> int:
    return sum(
        1 for q in queries
        if q["sql"].startswith("UPDATE") and "last_used_at" in q["sql"]
    )


def test_last_used_at_is_written_at_most_once_per_window(client, alice_key, settings):
    settings.API_KEY_LAST_USED_RESOLUTION_SECONDS = 300
    key, raw = alice_key
    assert key.last_used_at is None

    with CaptureQueriesContext(connection) as queries:
        assert client.get(ACCOUNT, **bearer(raw)).status_code == 200
        assert client.get(ACCOUNT, **bearer(raw)).status_code == 200

    assert _last_used_writes(queries.captured_queries) == 1
    first_use = ApiKey.objects.get(pk=key.pk).last_used_at
    assert first_use is not None and timezone.now() - first_use < timedelta(minutes=1)

    # Pretend the last write happened before the window started.
    stale = first_use - timedelta(seconds=301)
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=stale)

    with CaptureQueriesContext(connection) as queries:
        assert client.get(ACCOUNT, **bearer(raw)).status_code == 200

    assert _last_used_writes(queries.captured_queries) == 1
    assert ApiKey.objects.get(pk=key.pk).last_used_at > first_use


def test_the_last_used_write_is_one_conditional_update_without_a_lock(client, alice_key):
    _, raw = alice_key

    with CaptureQueriesContext(connection) as queries:
        client.get(ACCOUNT, **bearer(raw))

    sqls = [q["sql"] for q in queries.captured_queries]
    writes = [sql for sql in sqls if sql.startswith("UPDATE")]
    assert len(writes) == 1
    assert "last_used_at" in writes[0].split("WHERE", 1)[1]  # the condition is in the UPDATE
    assert not any("FOR UPDATE" in sql for sql in sqls)
