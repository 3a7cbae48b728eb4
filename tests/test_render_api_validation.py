"""Request validation of POST /v1/image/replace-background: every refusal names its field,
carries a stable code, and happens before any credit is reserved."""

from __future__ import annotations

import io
import os

import pytest
from django.test import Client
from PIL import Image

from imaging.models import Render
from tests.helpers_render import (  # noqa: F401  (fixtures are found by name)
    CREDITS,
    account,
    allow_loopback_fetches,
    api_client,
    clear_limits,
    make_user,
    post_render,
    product_png,
    render_env,
    serving,
    stored_inputs,
)


URL = "/v1/image/replace-background"
GOOD = {"image_url": "https://images.example.com/shoe.png", "scene_prompt": "a marble plinth"}


@pytest.fixture(autouse=True)
def _fresh_limits() -> None:
    clear_limits()


@pytest.fixture
def user(db):
    return make_user("v@example.com")


@pytest.fixture
def client(user) -> Client:
    return api_client(user)


def error_of(response) -> dict:
    body = response.json()
    assert set(body) >= {"error"}, body
    assert response["X-Request-Id"] == body["error"]["request_id"]
    return body["error"]


def assert_nothing_reserved(user) -> None:
    assert account(user).held == 0
    assert account(user).balance == 10 * CREDITS
    assert Render.objects.count() == 0


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"colour": "red"}, "colour"),
        ({"scene_prompt": None}, "scene_prompt"),
        ({"scene_prompt": ""}, "scene_prompt"),
        ({"scene_prompt": "   "}, "scene_prompt"),
        ({"scene_prompt": "x" * 2001}, "scene_prompt"),
        ({"scene_prompt": 42}, "scene_prompt"),
        ({"preserve_shadow": "yes"}, "preserve_shadow"),
        ({"preserve_shadow": 1}, "preserve_shadow"),
        ({"output_format": "gif"}, "output_format"),
        ({"output_format": 1}, "output_format"),
        ({"seed": "7"}, "seed"),
        ({"seed": 7.5}, "seed"),
        ({"seed": True}, "seed"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**32}, "seed"),
        ({"image_url": "ftp://images.example.com/a.png"}, "image_url"),
        ({"image_url": "javascript:alert(1)"}, "image_url"),
        ({"image_url": "https://images.example.com/" + "a" * 2030}, "image_url"),
        ({"image_url": "https://images.example.com/a b.png"}, "image_url"),
        ({"image_url": 5}, "image_url"),
        ({"image_url": None}, "image_url"),
        ({"image_file": "aGVsbG8="}, "image_file"),
    ],
)
def test_a_bad_json_field_is_400_invalid_request_naming_it(client, user, changes, param):
    body = {**GOOD, **changes}
    body = {k: v for k, v in body.items() if v is not None}
    response = client.post(URL, body, content_type="application/json")
    assert response.status_code == 400, response.content
    error = error_of(response)
    assert (error["code"], error["param"], error["type"]) == ("invalid_request", param, "invalid_request_error")
    assert_nothing_reserved(user)


def test_an_image_url_and_an_upload_together_are_refused(client, user):
    response = post_render(client, image=product_png(), image_url=GOOD["image_url"])
    assert response.status_code == 400
    assert error_of(response)["param"] == "image_url"
    assert_nothing_reserved(user)


def test_neither_an_image_url_nor_an_upload_is_refused(client, user):
    response = client.post(URL, {"scene_prompt": "a beach"}, content_type="application/json")
    assert response.status_code == 400
    assert error_of(response)["param"] == "image_url"


def test_an_unknown_multipart_field_is_refused_by_name(client, user):
    response = post_render(client, image=product_png(), shadow="true")
    assert response.status_code == 400
    assert error_of(response)["param"] == "shadow"


def test_a_multipart_boolean_must_be_a_boolean_spelling(client, user):
    response = post_render(client, image=product_png(), preserve_shadow="maybe")
    assert error_of(response)["param"] == "preserve_shadow"


def test_a_json_body_that_is_not_an_object_is_refused(client):
    response = client.post(URL, [GOOD], content_type="application/json")
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_request"


def test_malformed_json_is_400_invalid_json(client):
    response = client.post(URL, '{"scene_prompt": ', content_type="application/json")
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_json"


def test_another_content_type_is_415_unsupported_media_type(client):
    response = client.post(URL, "scene_prompt=x", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert error_of(response)["code"] == "unsupported_media_type"


def test_a_request_without_a_key_is_401_missing_api_key(db):
    response = Client().post(URL, GOOD, content_type="application/json")
    assert response.status_code == 401
    assert error_of(response)["code"] == "missing_api_key"
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_request_with_a_wrong_key_is_401_invalid_api_key(db):
    response = Client(headers={"Authorization": "Bearer pxl_live_nonsense"}).post(
        URL, GOOD, content_type="application/json")
    assert response.status_code == 401
    assert error_of(response)["code"] == "invalid_api_key"


def test_get_on_the_render_endpoint_is_405_method_not_allowed(client):
    response = client.get(URL)
    assert response.status_code == 405
    assert error_of(response)["code"] == "method_not_allowed"


def test_an_overlong_idempotency_key_is_refused_by_name(client, user):
    response = client.post(URL, GOOD, content_type="application/json", headers={"Idempotency-Key": "k" * 256})
    assert response.status_code == 400
    assert error_of(response)["param"] == "Idempotency-Key"
    assert_nothing_reserved(user)


def test_a_body_announced_larger_than_any_image_is_413_before_it_is_read(client, user):
    response = client.post(URL, GOOD, content_type="application/json", CONTENT_LENGTH=str(10**9))
    assert response.status_code == 413
    assert error_of(response)["code"] == "image_too_large"
    assert_nothing_reserved(user)


def test_an_upload_over_the_byte_limit_is_413(client, user, settings):
    settings.FETCH_MAX_BYTES = 1000
    response = post_render(client, image=os.urandom(5000))
    assert response.status_code == 413
    assert error_of(response)["param"] == "image_file"
    assert_nothing_reserved(user)


def test_an_upload_that_is_a_gif_is_415_unsupported_image(client, user):
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "GIF")
    response = post_render(client, image=buffer.getvalue())
    assert response.status_code == 415
    assert error_of(response) | {"request_id": None, "message": None} == {
        "type": "invalid_request_error", "code": "unsupported_image", "param": "image_file",
        "request_id": None, "message": None}
    assert_nothing_reserved(user)


def test_a_truncated_upload_is_422_invalid_image(client, user):
    response = post_render(client, image=product_png(64)[:60])
    assert response.status_code == 422
    assert error_of(response)["code"] == "invalid_image"
    assert_nothing_reserved(user)


def test_an_image_url_on_a_private_address_is_422_image_url_forbidden(client, user):
    with serving(product_png()) as url:
        response = client.post(URL, {**GOOD, "image_url": url}, content_type="application/json")
    assert response.status_code == 422
    assert error_of(response)["code"] == "image_url_forbidden"
    assert_nothing_reserved(user)


def test_an_image_url_that_answers_404_is_422_image_unreachable(client, user, settings):
    with serving(b"not here", content_type="text/plain", status=404) as url:
        allow_loopback_fetches(settings, url)
        response = client.post(URL, {**GOOD, "image_url": url}, content_type="application/json")
    assert response.status_code == 422
    error = error_of(response)
    assert (error["code"], error["param"]) == ("image_unreachable", "image_url")
    assert "404" in error["message"]
    assert_nothing_reserved(user)


@pytest.mark.usefixtures("render_env")
def test_too_few_credits_is_402_with_nothing_reserved_and_nothing_stored():
    user = make_user("poor@example.com", credits=CREDITS - 1)
    inputs_before = stored_inputs()
    response = post_render(api_client(user), image=product_png())
    assert response.status_code == 402
    error = error_of(response)
    assert error["code"] == "insufficient_credits" and "21" in error["message"]
    assert account(user).held == 0 and account(user).balance == CREDITS - 1
    assert Render.objects.count() == 0
    assert stored_inputs() == inputs_before
