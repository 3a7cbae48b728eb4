"""The dashboard: sign-in required, CSRF on every form, keys created and shown once, revoked."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from accounts.keys import authenticate_key, issue_key
from accounts.models import ApiKey, User

DASHBOARD_PAGES = ["/dashboard/", "/dashboard/keys/", "/dashboard/renders/", "/dashboard/playground/"]
NEW_KEY_VALUE = re.compile(r'id="new-key-value"[^>]*value="(pxl_live_[0-9A-Za-z]+)"')


@pytest.fixture
def alice(db) -> User:
    return User.objects.create_user("alice@example.com", "a-long-enough-password")


@pytest.fixture
def alice_client(alice) -> Client:
    client = Client()
    client.force_login(alice)
    return client


@pytest.fixture
def csrf_client(alice) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    return client


def csrf_token(client: Client, path: str = "/dashboard/keys/") -> str:
    page = client.get(path).content.decode()
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)


@pytest.mark.parametrize("path", DASHBOARD_PAGES)
def test_every_dashboard_page_sends_strangers_to_sign_in(client, db, path):
    response = client.get(path)

    assert response.status_code == 302
    assert response["Location"] == f"/login/?next={path}"


def test_creating_or_revoking_a_key_needs_a_signed_in_user(client, alice):
    key, raw = issue_key(alice, "server")

    created = client.post("/dashboard/keys/", {"name": "sneaky"})
    revoked = client.post(f"/dashboard/keys/{key.pk}/revoke/")

    assert created.status_code == 302 and created["Location"].startswith("/login/")
    assert revoked.status_code == 302 and revoked["Location"].startswith("/login/")
    assert ApiKey.objects.count() == 1
    assert authenticate_key(raw) is not None


@pytest.mark.parametrize("path", DASHBOARD_PAGES + ["/docs/"])
def test_signed_in_pages_show_the_navigation(alice_client, path):
    page = alice_client.get(path).content.decode()

    for href in ["/dashboard/", "/dashboard/keys/", "/dashboard/renders/", "/dashboard/playground/", "/dashboard/billing/", "/docs/"]:
        assert f'href="{href}"' in page
    nav = re.search(r'<nav[^>]*aria-label="Main".*?</nav>', page, re.S).group(0)
    assert nav.count('aria-current="page"') == 1
    assert re.search(rf'href="{re.escape(path)}" aria-current="page"', nav)


def test_the_docs_are_public(client, db):
    response = client.get("/docs/")
    assert response.status_code == 200
    assert "Authorization: Bearer" in response.content.decode()


def test_creating_a_key_without_the_csrf_token_is_forbidden(csrf_client):
    response = csrf_client.post("/dashboard/keys/", {"name": "server"})

    assert response.status_code == 403
    assert not ApiKey.objects.exists()


def test_creating_a_key_with_the_csrf_token_works(csrf_client):
    response = csrf_client.post(
        "/dashboard/keys/", {"name": "server", "csrfmiddlewaretoken": csrf_token(csrf_client)}
    )

    assert response.status_code == 302
    assert ApiKey.objects.get().name == "server"


def test_revoking_a_key_without_the_csrf_token_is_forbidden(csrf_client, alice):
    key, raw = issue_key(alice, "server")

    response = csrf_client.post(f"/dashboard/keys/{key.pk}/revoke/")

    assert response.status_code == 403
    assert authenticate_key(raw) is not None


def test_signing_out_without_the_csrf_token_is_forbidden(csrf_client):
    assert csrf_client.post("/logout/").status_code == 403
    assert csrf_client.get("/dashboard/").status_code == 200


def test_signing_in_and_up_without_the_csrf_token_is_forbidden(db):
    client = Client(enforce_csrf_checks=True)

    assert client.post("/login/", {"username": "a@example.com", "password": "x"}).status_code == 403
    signup = client.post("/signup/", {"email": "a@example.com", "password": "a-long-password"})
    assert signup.status_code == 403
    assert not User.objects.exists()


def test_a_new_key_is_shown_once_and_then_never_again(alice_client):
    created = alice_client.post("/dashboard/keys/", {"name": "server"})
    assert created.status_code == 302 and created["Location"] == "/dashboard/keys/"
    assert "pxl_live_" not in created.content.decode()

    first = alice_client.get("/dashboard/keys/")
    raw = NEW_KEY_VALUE.search(first.content.decode()).group(1)
    assert authenticate_key(raw).name == "server"
    assert first["Cache-Control"] == "no-store"

    again = alice_client.get("/dashboard/keys/").content.decode()
    assert raw not in again
    assert 'id="new-key-value"' not in again
    key = ApiKey.objects.get()
    assert key.masked in again


def test_a_new_key_is_only_revealed_to_its_owner(alice_client, db):
    alice_client.post("/dashboard/keys/", {"name": "server"})
    reveal_cookie = alice_client.cookies["new_api_key"].value
    mallory = User.objects.create_user("mallory@example.com", "mallorys-long-password")
    other = Client()
    other.force_login(mallory)
    other.cookies["new_api_key"] = reveal_cookie

    page = other.get("/dashboard/keys/").content.decode()

    assert "pxl_live_" not in page


def test_the_key_list_shows_name_masked_key_and_times_but_not_the_secret(alice_client, alice):
    key, raw = issue_key(alice, "staging box")
    authenticate_key(raw)

    page = alice_client.get("/dashboard/keys/").content.decode()

    assert "staging box" in page
    assert f"{key.display_prefix}…{key.last_four}" in page
    assert raw not in page and raw[13:-4] not in page
    assert "Never" in page  # not used yet
    assert key.created_at.strftime("%Y-%m-%d") in page


def test_revoking_a_key_from_the_dashboard_stops_it(alice_client, alice, client):
    key, raw = issue_key(alice, "server")
    assert client.get("/v1/account", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200

    response = alice_client.post(f"/dashboard/keys/{key.pk}/revoke/", follow=True)

    assert "Revoked" in response.content.decode()
    assert client.get("/v1/account", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 401


def test_nobody_can_revoke_another_users_key(alice_client, db):
    bob = User.objects.create_user("bob@example.com", "bobs-long-password")
    key, raw = issue_key(bob, "bob's server")

    response = alice_client.post(f"/dashboard/keys/{key.pk}/revoke/")

    assert response.status_code == 404
    assert authenticate_key(raw) is not None


def test_revoking_needs_a_post(alice_client, alice):
    key, raw = issue_key(alice, "server")

    assert alice_client.get(f"/dashboard/keys/{key.pk}/revoke/").status_code == 405
    assert authenticate_key(raw) is not None


def test_the_dashboard_refuses_a_key_past_the_limit(alice_client, alice, settings):
    settings.MAX_ACTIVE_API_KEYS = 1
    issue_key(alice, "only one")

    response = alice_client.post("/dashboard/keys/", {"name": "one too many"})

    assert response.status_code == 200
    assert "1 active API keys" in response.content.decode()
    assert ApiKey.objects.filter(user=alice).count() == 1


def test_a_key_needs_a_name_on_the_dashboard(alice_client):
    response = alice_client.post("/dashboard/keys/", {"name": ""})

    assert response.status_code == 200
    assert "This field is required" in response.content.decode()
    assert not ApiKey.objects.exists()


def test_the_overview_counts_active_keys(alice_client, alice):
    issue_key(alice, "one")
    issue_key(alice, "two")

    page = alice_client.get("/dashboard/").content.decode()

    assert re.search(r'class="stat">2 <span class="stat-unit">of \d+ active', page)
