"""The OpenAPI document: valid OpenAPI 3, and complete about the render API and its errors."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from drf_spectacular.validation import validate_schema

from imaging.schema import RENDER_FAILURE_CODES
from platform_site.api_errors import REGISTRY

POST = "/v1/image/replace-background"
GET = "/v1/renders/{render_id}"


@pytest.fixture(scope="module")
def schema(django_db_blocker) -> dict:
    with django_db_blocker.unblock():
        response = Client().get("/v1/schema/", {"format": "json"})
    assert response.status_code == 200, response.content
    return json.loads(response.content)


def test_the_schema_is_valid_openapi_3(schema):
    assert schema["openapi"].startswith("3.")
    validate_schema(schema)


def test_the_render_endpoint_documents_both_encodings(schema):
    body = schema["paths"][POST]["post"]["requestBody"]["content"]
    json_fields = resolve(schema, body["application/json"]["schema"])
    form_fields = resolve(schema, body["multipart/form-data"]["schema"])
    assert "image_url" in json_fields["required"] and "image_file" not in json_fields["properties"]
    assert "image_file" in form_fields["required"]
    assert form_fields["properties"]["image_file"]["format"] == "binary"
    for fields in (json_fields, form_fields):
        assert {"scene_prompt", "preserve_shadow", "output_format", "seed"} <= set(fields["properties"])
    assert json_fields["properties"]["scene_prompt"]["maxLength"] == 2000
    headers = [p["name"] for p in schema["paths"][POST]["post"]["parameters"] if p["in"] == "header"]
    assert "Idempotency-Key" in headers


def test_the_render_object_is_documented_with_every_field(schema):
    render = resolve(schema, schema["paths"][POST]["post"]["responses"]["200"]["content"]
                     ["application/json"]["schema"])
    assert {"id", "status", "output_url", "matte_url", "expires_at", "width", "height", "format", "seed",
            "credits_charged", "credits_remaining", "timings_ms", "created_at", "subject",
            "error"} <= set(render["properties"])
    assert "202" in schema["paths"][POST]["post"]["responses"]
    assert "200" in schema["paths"][GET]["get"]["responses"]


def test_every_registered_error_code_is_documented_with_its_status(schema):
    listed = {entry["code"]: entry["status"] for entry in schema["info"]["x-error-codes"]}
    assert listed == {code: entry.status for code, entry in REGISTRY.items()}
    for code in REGISTRY:
        assert f"`{code}`" in schema["info"]["description"]
    detail = schema["components"]["schemas"]["ErrorDetail"]
    assert set(detail["properties"]["code"]["enum"]) == set(REGISTRY)


@pytest.mark.parametrize("code", ["invalid_request", "missing_api_key", "insufficient_credits",
                                  "idempotency_key_reused", "idempotency_key_in_use", "image_url_forbidden",
                                  "image_too_large", "unsupported_image", "rate_limited",
                                  *RENDER_FAILURE_CODES])
def test_the_render_endpoint_lists_each_of_its_codes_under_its_status(schema, code):
    response = schema["paths"][POST]["post"]["responses"][str(REGISTRY[code].status)]
    assert f"`{code}`" in response["description"]
    examples = response["content"]["application/json"]["examples"].values()
    assert code in [example["value"]["error"]["code"] for example in examples]


def test_the_docs_pages_load_with_local_assets(db):
    swagger = Client().get("/v1/docs/")
    redoc = Client().get("/v1/redoc/")
    assert swagger.status_code == redoc.status_code == 200
    assert b"/v1/schema/" in swagger.content
    assert b"drf_spectacular_sidecar" in swagger.content and b"drf_spectacular_sidecar" in redoc.content
    assert b"cdn.jsdelivr" not in swagger.content


def resolve(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def test_the_render_object_served_has_exactly_the_documented_fields(schema):
    from django.utils import timezone

    from imaging.models import Render
    from imaging.serializers import RenderSerializer

    documented = resolve(schema, schema["paths"][GET]["get"]["responses"]["200"]["content"]
                         ["application/json"]["schema"])["properties"]
    now = timezone.now()
    for status in ("queued", "succeeded", "failed"):
        render = Render(public_id="rnd_x", status=status, output_key="outputs/rnd_x.png",
                        matte_key="mattes/rnd_x.png", created_at=now, deadline_at=now)
        assert set(RenderSerializer(render, context={"credits_remaining": 1}).data) == set(documented)
