"""The site's 403, 404 and 500 pages, the favicon, and JSON errors kept under /v1/.

People get pages in the site's layout; API clients keep getting the one JSON error
shape, also for paths no DRF view answers. The 500 page renders with no request and
no database, because either may be what broke.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.template import loader
from django.test import Client, RequestFactory
from django.urls import include, path

from imaging.dashboard.views import errors


def boom(request):
    raise RuntimeError("a bug in a page")


# This module is also the URLconf of the tests marked with pytest.mark.urls(__name__):
# the site's URLs plus two that crash.
urlpatterns = [path("boom/", boom), path("v1/boom", boom), path("", include("platform_site.urls"))]
handler500 = "imaging.dashboard.views.errors.server_error"


def signed_in(email: str, **fields) -> Client:
    user = get_user_model().objects.create_user(email, "a-long-password-here", **fields)
    client = Client()
    client.force_login(user)
    return client


def test_a_signed_in_non_staff_user_gets_the_styled_403_on_staff_pages(db):
    response = signed_in("dev@example.com").get("/staff/usage/")

    assert response.status_code == 403
    assert [t.name for t in response.templates][:2] == ["403.html", "base.html"]
    page = response.content.decode()
    assert "You don't have access to this page" in page and "dev@example.com" in page
    assert 'href="/dashboard/"' in page and "css/site.css" in page


def test_an_unknown_page_gets_the_styled_404_with_a_way_back(client, db):
    response = client.get("/no/such/page/")

    assert response.status_code == 404
    page = response.content.decode()
    assert "There is no page here" in page and "<code>/no/such/page/</code>" in page
    assert 'href="/"' in page and "css/site.css" in page


def test_another_accounts_render_is_the_same_styled_404(db):
    response = signed_in("dev@example.com").get("/dashboard/renders/rnd_000000000000000000000000/")

    assert response.status_code == 404 and "There is no page here" in response.content.decode()


def test_an_unknown_api_path_answers_the_json_error_shape_not_a_page(client, db):
    response = client.get("/v1/no-such-endpoint")

    assert response.status_code == 404 and response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "not_found" and error["type"] == "invalid_request_error"
    assert error["request_id"] == response["X-Request-Id"]


def test_an_api_refusal_answered_by_a_drf_view_is_still_its_own_json(client, db):
    response = client.get("/v1/account")

    assert response.status_code == 401 and response.json()["error"]["code"] == "missing_api_key"


@pytest.mark.urls(__name__)
def test_a_crash_in_a_page_answers_the_styled_500_with_the_request_id(db):
    response = Client(raise_request_exception=False).get("/boom/")

    assert response.status_code == 500
    page = response.content.decode()
    assert "Something went wrong on our side" in page and "Nothing was charged" in page
    assert f"<code>{response['X-Request-Id']}</code>" in page and "css/site.css" in page


@pytest.mark.urls(__name__)
def test_a_crash_under_v1_answers_the_json_error_shape(db):
    response = Client(raise_request_exception=False).get("/v1/boom")

    assert response.status_code == 500 and response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "internal_error" and error["request_id"] == response["X-Request-Id"]
    assert "a bug in a page" not in response.content.decode()


def test_the_500_page_renders_without_a_request_or_the_database():
    # No db fixture: any query here would fail the test.
    request = RequestFactory().get("/somewhere/")
    request.request_id = "req_test"

    response = errors.server_error(request)

    page = response.content.decode()
    assert response.status_code == 500
    assert "Something went wrong on our side" in page and "<code>req_test</code>" in page
    assert "Sign in" in page  # the anonymous navigation: no user was looked up


def test_when_even_the_500_template_fails_a_plain_page_goes_out(monkeypatch):
    def broken(name, *args, **kwargs):
        raise RuntimeError("template storage is gone")

    monkeypatch.setattr(loader, "get_template", broken)

    response = errors.server_error(RequestFactory().get("/"))

    assert response.status_code == 500 and response.content.decode() == errors.FALLBACK_500


def test_a_form_sent_without_its_csrf_token_gets_the_styled_403(db):
    client = Client(enforce_csrf_checks=True)

    response = client.post("/login/", {"username": "a@example.com", "password": "x"})

    assert response.status_code == 403
    assert "This form could not be sent" in response.content.decode()


# --- favicon ------------------------------------------------------------------------


def test_favicon_ico_is_served_from_the_static_files(client, db):
    response = client.get("/favicon.ico")

    assert response.status_code == 302 and response["Location"] == "/static/favicon.ico"
    assert "max-age=86400" in response["Cache-Control"]
    icon = client.get(response["Location"])
    assert icon.status_code == 200
    assert b"".join(icon.streaming_content)[:4] == b"\x00\x00\x01\x00"  # the ICO header


def test_every_page_links_the_svg_favicon(client, db):
    page = client.get("/docs/").content.decode()
    assert '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">' in page
    svg = client.get("/static/favicon.svg")
    assert svg.status_code == 200 and b"<svg" in b"".join(svg.streaming_content)
