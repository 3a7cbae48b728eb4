"""The landing page at /: what the product does, a real before/after, the price, the way in."""

from __future__ import annotations

import html
import json
import re

from django.contrib.auth import get_user_model
from django.contrib.staticfiles import finders
from django.test import Client

from billing.models import CreditPack
from imaging.dashboard.views import site


def landing(client: Client) -> str:
    response = client.get("/")
    assert response.status_code == 200
    return html.unescape(response.content.decode())


def test_the_landing_page_is_public_and_says_what_the_product_does(client, db):
    page = landing(client)

    assert "Replace the background of your product photos" in page
    for feature in ("True alpha matting", "Subject pixels kept exact", "Studio backdrops out of the box",
                    "Diffusion scenes on GPU"):
        assert f"<h3>{feature}</h3>" in page


def test_it_shows_the_before_and_after_from_the_static_sample_with_how_it_was_made(client, db):
    page = landing(client)

    assert 'src="/static/landing/before.jpg"' in page and 'src="/static/landing/after.jpg"' in page
    with open(finders.find("landing/sample.json"), encoding="utf-8") as handle:
        sample = json.load(handle)
    caption = re.search(r'data-testid="sample-caption">(.*?)</p>', page, re.S).group(1)
    assert "studio engine" in caption and f"“{sample['prompt']}”" in caption
    assert f"seed {sample['seed']}" in caption
    assert client.get("/static/landing/before.jpg").status_code == 200


def test_a_missing_or_broken_sample_file_only_drops_the_caption(client, db, monkeypatch, tmp_path):
    broken = tmp_path / "sample.json"
    broken.write_text("{not json")
    monkeypatch.setattr(finders, "find", lambda path: str(broken))
    assert site.landing_sample() is None
    monkeypatch.setattr(finders, "find", lambda path: None)
    assert site.landing_sample() is None

    page = landing(client)

    assert "Rendered by the studio engine from the built-in sample photo:" in page


def test_it_states_the_price_and_prices_every_pack_on_sale(client, db):
    CreditPack.objects.create(name="Hidden", credits=22, price=100, active=False)
    packs = list(CreditPack.objects.filter(active=True))
    assert packs  # the default packs (billing's data migration)

    page = landing(client)

    assert "22 credits a call" in page and "charged only when the render succeeds" in page
    table = re.search(r'data-testid="landing-packs">(.*?)</table>', page, re.S).group(1)
    for pack in packs:
        assert f'<th scope="row">{pack.name}</th>' in table and pack.price_display in table
        assert f">{pack.renders}<" in table
    assert "Hidden" not in table
    starter = CreditPack.objects.get(name="Starter")  # 50 renders for 10.00 USD
    assert starter.renders == 50 and "0.20 USD" in table


def test_visitors_are_offered_sign_up_docs_and_sign_in(client, db):
    page = landing(client)
    actions = re.search(r'data-testid="landing-actions">(.*?)</p>', page, re.S).group(1)

    assert 'href="/signup/"' in actions and 'href="/docs/"' in actions and 'href="/login/"' in actions
    assert "/dashboard/" not in actions


def test_a_signed_in_user_reaches_the_dashboard_in_one_click(db):
    user = get_user_model().objects.create_user("dev@example.com", "a-long-password-here")
    client = Client()
    client.force_login(user)

    page = landing(client)
    actions = re.search(r'data-testid="landing-actions">(.*?)</p>', page, re.S).group(1)

    assert re.search(r'<a class="button" href="/dashboard/">Open your dashboard</a>', actions)
    assert 'href="/signup/"' not in actions


def test_the_brand_link_leads_visitors_home_and_users_to_their_dashboard(client, db):
    assert '<a class="brand" href="/">' in client.get("/docs/").content.decode()
    user = get_user_model().objects.create_user("dev@example.com", "a-long-password-here")
    client.force_login(user)
    assert '<a class="brand" href="/dashboard/">' in client.get("/docs/").content.decode()
