"""The render's public result: small, typed, documented, and free of internal diagnostics.

A real render through a real worker is validated against the OpenAPI schema the API
serves, as served (``openapi-schema-validator``, strict OpenAPI 3.0's ``nullable``), the
exactness figures are checked against the downloaded file, and hostile or old worker
facts are shown to stay out of the response and off the customer's render page.
"""

from __future__ import annotations

import importlib
import io
import json
from typing import Any

import numpy as np
import pytest
from django.apps import apps
from django.test import Client
from django.utils import timezone
from openapi_schema_validator import OAS30Validator
from PIL import Image
from referencing import Registry, Resource

from gpu_worker.exactness import measure_exactness
from gpu_worker.composite import encode_image
from imaging.models import Render, RenderStatus
from imaging.serializers import RenderSerializer
from tests.helpers_render import (  # noqa: F401  (fixtures are found by name)
    api_client,
    fetch_url,
    make_user,
    post_render,
    product_png,
    render_env,
    WorkerSlot,
)

GET = "/v1/renders/{render_id}"
# Words of the worker's internals that were seen leaking into responses and pages.
INTERNAL_WORDS = ("threshold", "negative_prompt", "carried", "expansion", "attempts", "guidance",
                  "opaque_share", "edge_share", "scene_canvas", "timings_s")


@pytest.fixture(scope="module")
def served_schema(django_db_blocker) -> dict:
    with django_db_blocker.unblock():
        response = Client().get("/v1/schema/", {"format": "json"})
    assert response.status_code == 200
    return json.loads(response.content)


def render_validator(schema: dict) -> OAS30Validator:
    """A validator for the render object as the schema documents GET /v1/renders/{id}'s 200."""
    # The schema as served, no rewriting: it is strict OpenAPI 3.0.3 (imaging.schema.strict_openapi_30).
    registry = Registry().with_resource("urn:openapi", Resource.opaque(schema))
    ref = schema["paths"][GET]["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    return OAS30Validator({"$ref": "urn:openapi" + ref}, registry=registry)


def all_keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | set().union(*(all_keys(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(all_keys(v) for v in value)) if value else set()
    return set()


@pytest.fixture(scope="module")
def workers():
    slot = WorkerSlot()
    yield slot
    slot.stop()


# --- exactness, measured on the encoded file ---------------------------------------


def noisy_image(height: int = 96, width: int = 128) -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_exactness_counts_every_opaque_pixel_of_a_png_as_exact():
    image = noisy_image()
    alpha = np.zeros(image.shape[:2], np.uint8)
    alpha[10:60, 20:90] = 255
    alpha[60:70, 20:90] = 128
    encoded, _ = encode_image(image, "png")
    assert measure_exactness(image, alpha, encoded) == {
        "opaque_pixels": 50 * 70, "exact_pixels": 50 * 70, "share": 1.0}


def test_exactness_finds_each_changed_subject_pixel_in_the_file():
    image = noisy_image()
    alpha = np.full(image.shape[:2], 255, np.uint8)
    changed = image.copy()
    changed[5, 7, 0] ^= 1
    changed[40, 100] = 255 - changed[40, 100]
    encoded, _ = encode_image(changed, "png")
    facts = measure_exactness(image, alpha, encoded)
    assert facts["opaque_pixels"] == image.shape[0] * image.shape[1]
    assert facts["exact_pixels"] == facts["opaque_pixels"] - 2


def test_a_jpeg_output_reports_that_its_subject_pixels_are_not_all_exact():
    image = noisy_image()
    alpha = np.full(image.shape[:2], 255, np.uint8)
    encoded, _ = encode_image(image, "jpeg")
    facts = measure_exactness(image, alpha, encoded)
    assert facts["share"] is not None and facts["share"] < 0.5


def test_exactness_is_null_when_nothing_is_fully_opaque():
    image = noisy_image(16, 16)
    encoded, _ = encode_image(image, "png")
    assert measure_exactness(image, np.zeros((16, 16), np.uint8), encoded)["share"] is None


# --- what the response and the page show -------------------------------------------


def stored_render(**fields: Any) -> Render:
    now = timezone.now()
    values = dict(public_id="rnd_result", status=RenderStatus.SUCCEEDED, output_key="outputs/rnd_result-1.png",
                  matte_key="mattes/rnd_result-1.png", created_at=now, deadline_at=now, finished_at=now,
                  scene_prompt="pure white background", seed=11, width=40, height=30)
    values.update(fields)
    return Render(**values)


def test_internal_worker_facts_never_reach_the_response():
    leaky = {"bbox": [1, 2, 30, 20], "coverage": 0.4, "expansion_threshold": 0.02,
             "negative_prompt": "blurry", "shadow": {"carried": True, "reason": "x"},
             "expansion_by_attempt": [None], "opaque_share": 0.3}
    render = stored_render(subject=leaky, scene={"engine": "studio", "prompt": "p", "seed": 11,
                                                 "steps": 30},
                           exactness={"opaque_pixels": 10, "exact_pixels": 10, "share": 1.0, "x": 1},
                           shadow={"state": "kept", "strength": 0.25, "threshold": 0.1},
                           light={"direction": "left", "confidence": 0.8, "attached_share": 0.3},
                           timings_ms={"matting": 5, "total": 9, "matting_estimate_s": 3})
    body = RenderSerializer(render).data
    assert body["subject"] == {"bbox": [1, 2, 30, 20], "coverage": 0.4}
    assert body["scene"] == {"engine": "studio", "prompt": "p", "seed": 11}
    assert body["exactness"] == {"opaque_pixels": 10, "exact_pixels": 10, "share": 1.0}
    assert body["shadow"] == {"state": "kept", "strength": 0.25}
    assert body["light"] == {"direction": "left", "confidence": 0.8}
    assert body["timings_ms"] == {"matting": 5, "total": 9}
    leaked = [word for word in INTERNAL_WORDS if any(word in key for key in all_keys(body))]
    assert leaked == []


def test_an_unfinished_render_has_no_result_parts_yet():
    body = RenderSerializer(stored_render(status=RenderStatus.RUNNING)).data
    assert [body[part] for part in ("scene", "subject", "exactness", "shadow", "light")] == [None] * 5


@pytest.mark.django_db
def test_renders_stored_before_the_public_result_keep_their_facts_as_diagnostics():
    migration = importlib.import_module("imaging.migrations.0003_public_result")
    old_facts = {"bbox": [0, 0, 8, 8], "coverage": 0.5, "opaque_share": 0.4, "scene_model": "sdxl-inpainting",
                 "prompt": "a beach, light from the left", "negative_prompt": "blurry",
                 "light": {"direction": "left", "confidence": 0.9, "attached_share": 0.3},
                 "shadow": {"state": "kept", "strength": 0.2}}
    user = make_user("old@example.com")
    render = stored_render(user=user, subject=old_facts)
    render.save()

    migration.split_old_results(apps, None)

    render.refresh_from_db()
    assert render.diagnostics == old_facts
    body = RenderSerializer(render).data
    assert body["subject"] == {"bbox": [0, 0, 8, 8], "coverage": 0.5}
    assert body["scene"] == {"engine": "sdxl-inpainting", "prompt": "a beach, light from the left", "seed": 11}
    assert body["light"] == {"direction": "left", "confidence": 0.9}
    assert body["shadow"] == {"state": "kept", "strength": 0.2}


# --- a real render through a real worker ---------------------------------------------


@pytest.mark.usefixtures("render_env")
def test_a_real_render_answers_a_result_that_the_openapi_schema_validates(workers, settings,
                                                                         served_schema):
    settings.RENDER_SYNC_WINDOW_SECONDS = 55
    workers.use(None)
    client = api_client(make_user("result@example.com"))

    response = post_render(client, image=product_png(64), scene_prompt="pure white background", seed=4)

    assert response.status_code == 200, response.content
    body = response.json()
    render_validator(served_schema).validate(body)
    again = client.get(f"/v1/renders/{body['id']}").json()
    render_validator(served_schema).validate(again)
    assert set(body["subject"]) == {"bbox", "coverage"} and body["subject"]["bbox"] is not None
    assert body["scene"]["prompt"] == "pure white background" and body["scene"]["seed"] == 4
    assert [w for w in INTERNAL_WORDS if any(w in key for key in all_keys(body))] == []

    # The exactness figures are the downloaded file's, not a claim.
    output = np.asarray(Image.open(io.BytesIO(b"".join(
        fetch_url(client, body["output_url"]).streaming_content))).convert("RGB"))
    matte = np.asarray(Image.open(io.BytesIO(b"".join(
        fetch_url(client, body["matte_url"]).streaming_content))))
    source = np.asarray(Image.open(io.BytesIO(product_png(64))).convert("RGB"))
    opaque = matte == 255
    assert body["exactness"]["opaque_pixels"] == int(opaque.sum()) > 0
    assert body["exactness"]["exact_pixels"] == int(np.all(output == source, axis=-1)[opaque].sum())
    assert body["exactness"]["share"] == 1.0


@pytest.mark.usefixtures("render_env")
def test_the_render_page_shows_the_result_in_words_and_diagnostics_only_to_staff(workers, settings):
    settings.RENDER_SYNC_WINDOW_SECONDS = 55
    workers.use(None)
    user = make_user("page@example.com")
    response = post_render(api_client(user), image=product_png(64), scene_prompt="pure white background")
    assert response.status_code == 200, response.content
    render = Render.objects.get(public_id=response.json()["id"])
    assert render.diagnostics, "the worker's internal facts are kept for staff"

    page_client = Client()
    page_client.force_login(user)
    page = page_client.get(f"/dashboard/renders/{render.public_id}/").content.decode()
    assert 'data-testid="result-exactness"' in page and "identical to the source (100%)" in page
    assert 'data-testid="diagnostics"' not in page
    for sign_of_a_repr in ("{&#x27;", "[None]", "&#x27;carried&#x27;", "Subject: "):
        assert sign_of_a_repr not in page

    user.is_staff = True
    user.save()
    staff_page = page_client.get(f"/dashboard/renders/{render.public_id}/").content.decode()
    assert 'data-testid="diagnostics"' in staff_page and "opaque_share" in staff_page
