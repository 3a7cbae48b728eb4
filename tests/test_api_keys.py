"""API keys: format, issue, authenticate, revoke, the active-key limit, storage and admin."""

from __future__ import annotations

import hashlib
import io
import re

import pytest
from django.core.management import call_command
from django.urls import reverse

from accounts.keys import (
    ApiKeyLimitReached,
    authenticate_key,
    generate_key,
    is_well_formed,
    issue_key,
    revoke_key,
)
from accounts.models import ApiKey, User

KEY_SHAPE = re.compile(r"pxl_live_[0-9A-Za-z]{32}[0-9A-Za-z]{6}")
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


@pytest.fixture
def alice(db) -> User:
    return User.objects.create_user("alice@example.com", "a-long-enough-password")


def _swap_one_character(raw: str, position: int) -> str:
    replacement = BASE62[(BASE62.index(raw[position]) + 1) % 62]
    return raw[:position] + replacement + raw[position + 1 :]


def test_an_issued_key_has_the_product_prefix_32_random_characters_and_a_checksum(alice):
    key, raw = issue_key(alice, "laptop")

    assert KEY_SHAPE.fullmatch(raw)
    assert is_well_formed(raw)
    assert key.display_prefix == raw[:13] and key.display_prefix.startswith("pxl_live_")
    assert key.last_four == raw[-4:]
    assert key.hashed_key == hashlib.sha256(raw.encode()).hexdigest()


def test_two_keys_never_share_their_random_part(alice):
    raws = {issue_key(alice, f"key {i}")[1] for i in range(5)}
    assert len({raw[9:41] for raw in raws}) == 5


def test_a_key_authenticates_as_its_owner_until_it_is_revoked(alice):
    key, raw = issue_key(alice, "server")

    found = authenticate_key(raw)
    assert found is not None and found.pk == key.pk and found.user == alice

    revoke_key(key)

    assert key.revoked_at is not None
    assert ApiKey.objects.get(pk=key.pk).revoked_at is not None
    assert authenticate_key(raw) is None


def test_revoking_twice_keeps_the_first_revocation_time(alice):
    key, _ = issue_key(alice, "server")
    revoke_key(key)
    first = key.revoked_at

    revoke_key(ApiKey.objects.get(pk=key.pk))

    assert ApiKey.objects.get(pk=key.pk).revoked_at == first


def test_a_key_of_a_deactivated_user_does_not_authenticate(alice):
    _, raw = issue_key(alice, "server")
    User.objects.filter(pk=alice.pk).update(is_active=False)

    assert authenticate_key(raw) is None


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "pxl_live_",
        "sk_live_0123456789abcdefghijABCDEFGHIJ0123456",
        "pxl_live_short123456",
        "pxl_live_" + "a" * 31 + "b" * 6,
        "pxl_live_" + "é" * 38,
        " pxl_live_" + "a" * 38,
        "pxl_live_" + "a" * 300,
    ],
)
def test_malformed_keys_are_refused_without_a_query(db, raw, django_assert_num_queries):
    with django_assert_num_queries(0):
        assert authenticate_key(raw) is None


def test_a_mistyped_key_fails_its_checksum_without_a_query(alice, django_assert_num_queries):
    _, raw = issue_key(alice, "server")
    typos = [_swap_one_character(raw, position) for position in (9, 20, 40, len(raw) - 1)]
    typos.append(raw[:20] + raw[21] + raw[20] + raw[22:])  # two neighbours swapped
    typos = [typo for typo in typos if typo != raw]

    with django_assert_num_queries(0):
        for typo in typos:
            assert not is_well_formed(typo)
            assert authenticate_key(typo) is None


def test_an_unknown_but_well_formed_key_costs_exactly_one_query(alice, django_assert_num_queries):
    issue_key(alice, "server")
    raw = generate_key()  # well-formed, checksum right, never issued
    assert is_well_formed(raw)

    with django_assert_num_queries(1):
        assert authenticate_key(raw) is None


def test_a_revoked_key_is_refused_after_one_query(alice, django_assert_num_queries):
    key, raw = issue_key(alice, "server")
    revoke_key(key)

    with django_assert_num_queries(1):
        assert authenticate_key(raw) is None


def test_the_database_never_holds_the_plaintext_key(alice):
    _, raw = issue_key(alice, "server")
    random_part = raw[len("pxl_live_") : -6]

    dump = io.StringIO()
    # Every app's tables; django_rq's admin-only Dashboard model has no table to dump.
    call_command("dumpdata", exclude=["django_rq"], stdout=dump)
    text = dump.getvalue()

    assert hashlib.sha256(raw.encode()).hexdigest() in text  # the dump did include the key
    assert raw not in text
    assert random_part not in text


def test_a_user_cannot_hold_more_active_keys_than_the_limit(alice, settings):
    settings.MAX_ACTIVE_API_KEYS = 2
    first, _ = issue_key(alice, "one")
    issue_key(alice, "two")

    with pytest.raises(ApiKeyLimitReached, match="2 active API keys"):
        issue_key(alice, "three")
    assert ApiKey.objects.filter(user=alice).count() == 2

    revoke_key(first)
    _, raw = issue_key(alice, "three")
    assert authenticate_key(raw) is not None


def test_the_limit_counts_each_user_separately(alice, settings):
    settings.MAX_ACTIVE_API_KEYS = 1
    bob = User.objects.create_user("bob@example.com", "another-long-password")
    issue_key(alice, "alice's")

    _, raw = issue_key(bob, "bob's")

    assert authenticate_key(raw).user == bob


@pytest.mark.parametrize("name", ["", "   ", "x" * 101])
def test_a_key_needs_a_sensible_name(alice, name):
    with pytest.raises(ValueError):
        issue_key(alice, name)
    assert not ApiKey.objects.exists()


def test_the_admin_lists_keys_masked_and_never_shows_the_hash(alice, client):
    admin = User.objects.create_superuser("admin@example.com", "an-admin-password")
    key, raw = issue_key(alice, "server")
    client.force_login(admin)

    listing = client.get(reverse("admin:accounts_apikey_changelist")).content.decode()
    detail = client.get(reverse("admin:accounts_apikey_change", args=[key.pk])).content.decode()

    for page in (listing, detail):
        assert key.masked in page
        assert key.hashed_key not in page
        assert raw not in page
    assert 'name="hashed_key"' not in detail and 'name="name"' not in detail
    assert client.get(reverse("admin:accounts_apikey_add")).status_code == 403


def test_the_admin_revokes_selected_keys(alice, client):
    admin = User.objects.create_superuser("admin@example.com", "an-admin-password")
    key, raw = issue_key(alice, "server")
    client.force_login(admin)

    response = client.post(
        reverse("admin:accounts_apikey_changelist"),
        {"action": "revoke_selected", "_selected_action": [key.pk]},
    )

    assert response.status_code == 302
    assert authenticate_key(raw) is None


def test_the_admin_lists_users_by_email(alice, client):
    admin = User.objects.create_superuser("admin@example.com", "an-admin-password")
    client.force_login(admin)

    listing = client.get(reverse("admin:accounts_user_changelist"))
    adding = client.post(
        reverse("admin:accounts_user_add"),
        {"email": "Carol@Example.com", "usable_password": "true",
         "password1": "carols-long-password", "password2": "carols-long-password"},
    )

    assert "alice@example.com" in listing.content.decode()
    assert adding.status_code == 302
    assert User.objects.get(email="carol@example.com").check_password("carols-long-password")
