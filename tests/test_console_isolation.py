"""One developer never sees another's renders, keys or ledger anywhere in the console."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from accounts.keys import issue_key
from billing import ledger
from imaging.models import Render
from tests.helpers_render import (  # noqa: F401  (fixtures)
    api_client,
    fake_gpu,
    make_user,
    post_render,
    product_png,
    render_env,
    run_gpu_jobs_in_process,
)



def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def bobs_render(fake_gpu) -> Render:
    """Bob's finished render, made through the API with Bob's key."""
    bob = make_user("bob@example.com")
    response = post_render(api_client(bob, "bob's secret server"), image=product_png(16),
                           scene_prompt="bob's private product shoot")
    run_gpu_jobs_in_process()
    render = Render.objects.get(public_id=response.json()["id"])
    signed_in(bob).get(f"/dashboard/renders/{render.public_id}/status")  # settle it
    render.refresh_from_db()
    assert render.status == "succeeded"
    return render


@pytest.fixture
def alice(db) -> Client:
    return signed_in(make_user("alice@example.com"))


def test_another_users_render_page_is_404(alice, bobs_render):
    assert alice.get(f"/dashboard/renders/{bobs_render.public_id}/").status_code == 404


def test_another_users_render_status_is_404_and_says_nothing_about_it(alice, bobs_render):
    response = alice.get(f"/dashboard/renders/{bobs_render.public_id}/status")
    assert response.status_code == 404
    assert bobs_render.scene_prompt not in response.content.decode()


def test_another_users_input_image_is_404(alice, bobs_render):
    assert alice.get(f"/dashboard/renders/{bobs_render.public_id}/input.png").status_code == 404


def test_another_users_renders_are_not_in_the_gallery_overview_or_playground(alice, bobs_render):
    for page in ("/dashboard/renders/", "/dashboard/renders/?status=succeeded", "/dashboard/", "/dashboard/playground/"):
        content = alice.get(page).content.decode()
        assert bobs_render.public_id not in content, page
        assert "bob&#x27;s private product shoot" not in content and "bob's private product shoot" not in content


def test_another_users_renders_do_not_count_in_my_numbers(alice, bobs_render):
    page = alice.get("/dashboard/").content.decode()
    assert 'data-testid="month-renders">0 <' in page
    assert "0 credits charged" in page


def test_another_users_keys_are_not_shown_on_my_pages(alice, bobs_render):
    bobs_key, _ = issue_key(bobs_render.user, "bob's laptop")
    for page in ("/docs/", "/dashboard/keys/", "/dashboard/"):
        content = alice.get(page).content.decode()
        assert bobs_key.display_prefix not in content and "bob&#x27;s laptop" not in content, page


def test_another_users_ledger_is_not_on_my_billing_page(alice, bobs_render, db):
    ledger.grant(bobs_render.user, 500, reference="bob-special-grant", note="bob's bonus")
    ledger.reserve(bobs_render.user, 22, reference="rnd_bobs_hold", expires_at=timezone.now() + timedelta(minutes=5))

    page = alice.get("/dashboard/billing/").content.decode()

    assert "bob-special-grant" not in page and bobs_render.public_id not in page
    assert 'data-testid="credits-held">0<' in page
