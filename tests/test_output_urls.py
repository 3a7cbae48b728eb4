"""Output links: signed, expiring, the right type, the owner's only, gone after retention."""

from __future__ import annotations

import io
import os
import time
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from PIL import Image

from imaging.models import Render
from imaging.signed_urls import serves_locally, signed_url
from tests.helpers_render import (  # noqa: F401  (fixtures are found by name)
    api_client,
    fake_gpu,
    fetch_url,
    make_user,
    post_render,
    product_png,
    render_env,
    run_gpu_jobs_in_process,
)


def finished_render(client, **fields) -> dict:
    response = post_render(client, image=product_png(16), **fields)
    assert response.status_code == 202, response.content
    run_gpu_jobs_in_process()
    body = client.get(f"/v1/renders/{response.json()['id']}").json()
    assert body["status"] == "succeeded", body
    return body


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + "?" + parts.query


@pytest.mark.usefixtures("fake_gpu")
def test_the_output_and_matte_download_through_their_links_with_the_right_types():
    client = api_client(make_user("dl@example.com"))
    body = finished_render(client)

    output = fetch_url(client, body["output_url"])
    matte = fetch_url(client, body["matte_url"])

    assert output.status_code == 200 and matte.status_code == 200
    assert output["Content-Type"] == "image/png" and matte["Content-Type"] == "image/png"
    assert output["X-Content-Type-Options"] == "nosniff"
    assert Image.open(io.BytesIO(b"".join(output.streaming_content))).size == (16, 16)
    assert Image.open(io.BytesIO(b"".join(matte.streaming_content))).mode == "L"
    assert body["output_url"].startswith("http://testserver/v1/files/outputs/")
    assert body["expires_at"] is not None


@pytest.mark.usefixtures("fake_gpu")
def test_a_webp_output_is_served_as_webp():
    client = api_client(make_user("webp@example.com"))
    body = finished_render(client, output_format="webp")
    assert urlsplit(body["output_url"]).path.endswith(".webp")
    assert fetch_url(client, body["output_url"])["Content-Type"] == "image/webp"


@pytest.mark.usefixtures("fake_gpu")
def test_an_expired_link_is_403_url_expired():
    client = api_client(make_user("exp@example.com"))
    render = Render.objects.get(public_id=finished_render(client)["id"])
    stale = signed_url(render.output_key, ttl=60, now=time.time() - 61)
    response = Client().get(path_of(stale.url))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "url_expired"


@pytest.mark.parametrize("tamper", ["signature", "expires", "key", "missing"])
@pytest.mark.usefixtures("fake_gpu")
def test_a_forged_link_is_403_url_signature_invalid(tamper):
    client = api_client(make_user(f"forge-{tamper}@example.com"))
    body = finished_render(client)
    parts = urlsplit(body["output_url"])
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    path = parts.path
    if tamper == "signature":
        query["signature"] = ("0" if query["signature"][0] != "0" else "1") + query["signature"][1:]
    elif tamper == "expires":
        query["expires"] = str(int(query["expires"]) + 86400)
    elif tamper == "key":
        path = urlsplit(body["matte_url"]).path
    else:
        query = {}
    response = Client().get(path, query)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "url_signature_invalid"


@pytest.mark.usefixtures("fake_gpu")
def test_a_signed_link_to_anything_but_an_output_or_matte_is_404():
    client = api_client(make_user("input@example.com"))
    render = Render.objects.get(public_id=finished_render(client)["id"])
    response = Client().get(path_of(signed_url(render.input_key).url))
    assert response.status_code == 404


@pytest.mark.usefixtures("fake_gpu")
def test_get_hands_out_fresh_links(settings):
    client = api_client(make_user("fresh@example.com"))
    render_id = finished_render(client)["id"]
    settings.OUTPUT_URL_TTL_SECONDS = 60
    short = client.get(f"/v1/renders/{render_id}").json()
    settings.OUTPUT_URL_TTL_SECONDS = 3600
    long = client.get(f"/v1/renders/{render_id}").json()
    assert long["expires_at"] > short["expires_at"]
    assert long["output_url"] != short["output_url"]


@pytest.mark.usefixtures("fake_gpu")
def test_another_users_render_is_404_like_one_that_does_not_exist():
    owner = api_client(make_user("owner@example.com"))
    render_id = post_render(owner, image=product_png(16)).json()["id"]
    stranger = api_client(make_user("stranger@example.com"))

    theirs = stranger.get(f"/v1/renders/{render_id}")
    nobodys = stranger.get("/v1/renders/rnd_000000000000000000000000")

    assert theirs.status_code == nobodys.status_code == 404
    assert theirs.json()["error"]["code"] == "not_found"
    assert owner.get(f"/v1/renders/{render_id}").status_code == 200


@pytest.mark.usefixtures("fake_gpu")
def test_purge_renders_deletes_files_after_the_retention_period(settings):
    settings.RETENTION_DAYS = 30
    client = api_client(make_user("old@example.com"))
    old = finished_render(client)
    new = finished_render(client)
    Render.objects.filter(public_id=old["id"]).update(created_at=timezone.now() - timedelta(days=31))
    old_render = Render.objects.get(public_id=old["id"])

    call_command("purge_renders")

    assert not default_storage.exists(old_render.output_key)
    assert not default_storage.exists(old_render.matte_key)
    assert not default_storage.exists(old_render.input_key)
    assert fetch_url(client, old["output_url"]).status_code == 404
    refreshed = client.get(f"/v1/renders/{old['id']}").json()
    assert refreshed["status"] == "succeeded" and refreshed["output_url"] is None
    assert fetch_url(client, new["output_url"]).status_code == 200


def test_with_s3_storage_links_are_presigned_by_the_bucket(settings):
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {"bucket_name": "renders", "endpoint_url": "http://127.0.0.1:9",
                        "region_name": "us-east-1", "access_key": "test", "secret_key": "test",
                        "querystring_auth": True, "signature_version": "s3v4"},
        },
    }
    settings.OUTPUT_URL_TTL_SECONDS = 600
    assert not serves_locally()
    link = signed_url("outputs/rnd_x.png")
    query = parse_qs(urlsplit(link.url).query)
    assert link.url.startswith("http://127.0.0.1:9/renders/outputs/rnd_x.png?")
    assert query["X-Amz-Expires"] == ["600"] and "X-Amz-Signature" in query
    assert link.expires_at - timezone.now() <= timedelta(seconds=601)


@pytest.mark.parametrize("expires", ["²", "１２３", "12e3", "-5", "9" * 40, " 123"])
def test_an_expiry_that_is_not_plain_ascii_digits_is_403_not_a_server_error(db, expires):
    response = Client().get("/v1/files/outputs/rnd_x-1.png", {"expires": expires, "signature": "0" * 64})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "url_signature_invalid"


def test_a_file_path_with_control_or_non_ascii_characters_is_404(db):
    response = Client().get("/v1/files/%C3%B42%05?signature=%C2%91%F2&expires=2970")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.usefixtures("fake_gpu")
def test_a_stored_output_that_cannot_be_read_is_503_storage_unavailable_not_a_500():
    client = api_client(make_user("unreadable@example.com"))
    body = finished_render(client)
    render = Render.objects.get(public_id=body["id"])
    path = default_storage.path(render.output_key)
    os.remove(path)
    os.mkdir(path)  # still there, but not readable as a file (root ignores mode bits)

    response = fetch_url(client, body["output_url"])

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "storage_unavailable"
