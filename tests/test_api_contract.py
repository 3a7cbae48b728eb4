"""The OpenAPI schema is the contract: strict, complete about statuses and headers, and
exactly as strict as the API about what it accepts; and every answer under /v1/ is the
API's JSON error shape, whatever the input.

The live fuzz of the same contract is ``tests/test_schemathesis_fuzz.py``.
"""

from __future__ import annotations

import json

import pytest
from django.http import HttpResponse, HttpResponseServerError
from django.test import Client, RequestFactory
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate as validate_spec

from imaging.serializers import RenderRequestSerializer
from platform_site.api_errors import REGISTRY
from platform_site.middleware import ApiErrorShapeMiddleware
from tests.helpers_render import api_client, make_user, post_render, product_png  # noqa: F401

POST = "/v1/image/replace-background"
RENDER = "/v1/renders/{render_id}"
FILE = "/v1/files/{folder}/{name}"
ACCOUNT = "/v1/account"
AUTHENTICATED = [(POST, "post"), (RENDER, "get"), (ACCOUNT, "get")]


@pytest.fixture(scope="module")
def schema(django_db_blocker) -> dict:
    with django_db_blocker.unblock():
        response = Client().get("/v1/schema/", {"format": "json"})
    assert response.status_code == 200
    return json.loads(response.content)


def resolve(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        section, name = node["$ref"].split("/")[-2:]
        node = schema["components"][section][name]
    return node


def operations(schema: dict):
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            yield path, method, operation


def walk(node, where=""):
    if isinstance(node, dict):
        yield where, node
        for key, value in node.items():
            yield from walk(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{where}/{index}")


def body_schema(schema: dict, media_type: str) -> dict:
    return resolve(schema, schema["paths"][POST]["post"]["requestBody"]["content"][media_type]["schema"])


def json_error(response) -> dict:
    assert response["Content-Type"].startswith("application/json"), response.content[:200]
    return json.loads(response.content)["error"]


# --- a strict OpenAPI 3.0.3 document -------------------------------------------------


def test_the_schema_passes_the_openapi_spec_validator(schema):
    assert schema["openapi"] == "3.0.3"
    validate_spec(schema)


def test_no_schema_object_has_nullable_without_a_type_beside_it(schema):
    loose = [where for where, node in walk(schema) if node.get("nullable") is True and "type" not in node]
    assert loose == []


def test_no_reference_has_siblings_that_openapi_3_0_would_ignore(schema):
    assert [where for where, node in walk(schema) if "$ref" in node and len(node) > 1] == []


def test_a_nullable_object_validates_null_and_the_object_and_nothing_else(schema):
    render = resolve(schema, {"$ref": "#/components/schemas/Render"})
    registry_schema = {**render["properties"]["subject"], "components": schema["components"]}
    validator = OAS30Validator(registry_schema)
    assert validator.is_valid(None)
    assert validator.is_valid({"bbox": [0, 0, 4, 4], "coverage": 0.5})
    assert not validator.is_valid("nothing")


# --- every status and header -----------------------------------------------------------


@pytest.mark.parametrize(("path", "method"), AUTHENTICATED)
def test_every_operation_with_a_key_documents_401_and_429_with_the_error_schema(schema, path, method):
    responses = schema["paths"][path][method]["responses"]
    for status in ("401", "429", "500"):
        body = resolve(schema, responses[status]["content"]["application/json"]["schema"])
        assert "error" in body["properties"], (path, status)
    assert responses["401"]["headers"]["WWW-Authenticate"]["required"] is True
    assert responses["429"]["headers"]["Retry-After"]["required"] is True


def test_every_documented_status_is_one_the_error_registry_or_the_operation_answers(schema):
    registered = {str(entry.status) for entry in REGISTRY.values()}
    for path, method, operation in operations(schema):
        for status in operation["responses"]:
            assert status in registered or status in ("200", "202"), (path, method, status)


def test_the_render_endpoint_documents_each_error_status_it_can_answer(schema):
    documented = set(schema["paths"][POST]["post"]["responses"])
    assert {"200", "202", "400", "401", "402", "409", "413", "415", "422", "429", "500", "503"} <= documented


def test_the_file_links_document_403_404_and_503_and_need_no_key(schema):
    operation = schema["paths"][FILE]["get"]
    assert {"200", "403", "404", "503"} <= set(operation["responses"])
    assert not operation.get("security") and "security" not in schema  # no key asked for


def test_every_response_documents_its_request_id_header(schema):
    for path, method, operation in operations(schema):
        for status, response in operation["responses"].items():
            header = resolve(schema, response["headers"]["X-Request-Id"])
            assert header.get("required") is True and header["schema"]["pattern"] == "^req_[0-9a-f]{24}$", (
                path, status)


def test_render_answers_document_the_credit_location_retry_and_replay_headers(schema):
    post = schema["paths"][POST]["post"]["responses"]
    assert post["200"]["headers"]["X-Credits-Charged"]["required"] is True
    assert {"X-Credits-Remaining", "Idempotent-Replayed"} <= set(post["200"]["headers"])
    assert all(post["202"]["headers"][name]["required"] is True
               for name in ("X-Credits-Charged", "Retry-After", "Location"))
    assert "X-Credits-Charged" in post["422"]["headers"]  # a render that failed inside the window
    assert schema["paths"][RENDER]["get"]["responses"]["200"]["headers"]["X-Credits-Charged"]["required"] is True


def test_the_idempotency_key_header_is_documented_with_its_limits(schema):
    parameter = next(p for p in schema["paths"][POST]["post"]["parameters"] if p["name"] == "Idempotency-Key")
    assert parameter["in"] == "header" and not parameter.get("required", False)
    assert (parameter["schema"]["minLength"], parameter["schema"]["maxLength"]) == (1, 255)


def test_a_202_body_is_exactly_one_of_the_render_and_the_stub(schema):
    accepted = schema["paths"][POST]["post"]["responses"]["202"]["content"]["application/json"]["schema"]
    validator = OAS30Validator({**accepted, "components": schema["components"]})
    stub = {"id": "rnd_1", "object": "render", "status": "queued", "status_url": "http://t/v1/renders/rnd_1"}
    assert validator.is_valid(stub)
    assert not validator.is_valid({**stub, "output_url": None})  # not a stub, not a whole render


# --- every constraint the API enforces ------------------------------------------------


def test_image_url_is_an_http_uri_with_its_maximum_length(schema):
    field = body_schema(schema, "application/json")["properties"]["image_url"]
    assert (field["type"], field["format"], field["maxLength"]) == ("string", "uri", 2048)
    assert field["pattern"].startswith("^[Hh][Tt][Tt][Pp][Ss]?://")


def accepted_by_the_api(**fields) -> dict:
    data = {"image_url": "https://images.example.com/a.png", "scene_prompt": "a beach", **fields}
    serializer = RenderRequestSerializer(data=data, context={"form_encoded": False})
    serializer.is_valid()
    return serializer.errors


@pytest.mark.parametrize("url", ["https://images.example.com/a.png", "HTTP://a/b?c#d", "http://bücher.example/x",
                                 "", "ftp://a/b", "http://", "http:///a", "http://a b/", "http://a/\x7f",
                                 "http://a/\tb", "javascript:alert(1)", "https://" + "a" * 2050,
                                 "http://[::1/x", "https://?x"])
def test_the_image_url_pattern_refuses_exactly_what_the_api_answers_400(schema, url):
    field = body_schema(schema, "application/json")["properties"]["image_url"]
    schema_says = OAS30Validator(field).is_valid(url)
    api_says = "image_url" not in accepted_by_the_api(image_url=url)
    assert schema_says == api_says, (url, accepted_by_the_api(image_url=url))


@pytest.mark.parametrize("prompt", ["a beach", " x ", "", " ", "\t\n", "\u3000", "\x1c", "\x85", "\ufeff", "a\x00b",
                                    "x" * 2000, "x" * 2001, " " * 1999 + "x" + " "])
def test_the_scene_prompt_constraints_refuse_exactly_what_the_api_answers_400(schema, prompt):
    field = body_schema(schema, "application/json")["properties"]["scene_prompt"]
    schema_says = OAS30Validator(field).is_valid(prompt)
    api_says = "scene_prompt" not in accepted_by_the_api(scene_prompt=prompt)
    assert schema_says == api_says, (repr(prompt), accepted_by_the_api(scene_prompt=prompt))


def test_output_format_is_an_enum_and_seed_an_integer_range(schema):
    fields = body_schema(schema, "application/json")["properties"]
    assert set(resolve(schema, fields["output_format"]["allOf"][0])["enum"]) == {"png", "jpeg", "webp"}
    assert (fields["seed"]["minimum"], fields["seed"]["maximum"]) == (0, 2**32 - 1)
    assert "seed" not in accepted_by_the_api(seed=2**32 - 1) and "seed" in accepted_by_the_api(seed=2**32)


def test_each_body_takes_exactly_one_image_source_and_no_unknown_field(schema):
    as_json, as_form = body_schema(schema, "application/json"), body_schema(schema, "multipart/form-data")
    assert "image_url" in as_json["required"] and "image_file" not in as_json["properties"]
    assert "image_file" in as_form["required"] and "image_url" not in as_form["properties"]
    assert as_json["additionalProperties"] is False and as_form["additionalProperties"] is False


def test_the_upload_lists_its_media_types_and_its_limits(schema):
    content = schema["paths"][POST]["post"]["requestBody"]["content"]["multipart/form-data"]
    media_types = content["encoding"]["image_file"]["contentType"]
    assert "image/png" in media_types and "image/gif" not in media_types
    description = body_schema(schema, "multipart/form-data")["properties"]["image_file"]["description"]
    assert "25,000,000 bytes" in description and "GIF" in description


def test_the_file_path_parameters_are_the_storage_key_grammar(schema):
    parameters = {p["name"]: p["schema"] for p in schema["paths"][FILE]["get"]["parameters"]}
    assert parameters["folder"]["enum"] == ["outputs", "mattes"]
    assert OAS30Validator(parameters["name"]).is_valid("rnd_5f3a0c1d2e3f405162738495-1.png")
    assert not OAS30Validator(parameters["name"]).is_valid("rnd_x-1.gif")
    assert parameters["signature"]["pattern"] == "^[0-9a-f]{64}$"


# --- the API's own JSON for every answer under /v1/ -------------------------------------


@pytest.mark.parametrize("path", ["/v1/files/%C3%B42%05/x.png", "/v1/files/outputs/%00.png",
                                  "/v1/files/outputs/rnd_x-1.gif", "/v1/files/inputs/rnd_x-1.png",
                                  "/v1/files/outputs/..%2Frnd_x-1.png", "/v1/files/a/b/c.png"])
def test_a_file_key_outside_the_grammar_is_a_json_404_before_its_signature_is_read(db, path):
    response = Client().get(path, {"expires": "99999999999", "signature": "0" * 64})
    assert response.status_code == 404
    assert json_error(response)["code"] == "not_found"


def test_a_render_id_with_control_characters_is_a_json_404(db):
    client = api_client(make_user("ids@example.com"))
    for render_id in ("%00", "rnd_%C3%B4%05", "rnd_" + "a" * 40):
        response = client.get(f"/v1/renders/{render_id}")
        assert response.status_code == 404 and json_error(response)["code"] == "not_found"


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("method", ["get", "post", "delete"])
def test_an_unknown_api_path_answers_a_json_404_with_debug_on_or_off(db, settings, debug, method):
    settings.DEBUG = debug
    response = getattr(Client(), method)("/v1/no-such-thing")
    assert response.status_code == 404
    assert json_error(response)["code"] == "not_found"
    assert response["X-Request-Id"] == json_error(response)["request_id"]


def test_a_known_api_page_without_its_slash_is_still_redirected(db):
    response = Client().get("/v1/docs")
    assert response.status_code == 301 and response["Location"] == "/v1/docs/"


@pytest.mark.parametrize(("method", "path"), [("post", ACCOUNT), ("put", "/v1/renders/rnd_x"),
                                              ("post", "/v1/schema/"), ("delete", "/v1/files/outputs/rnd_x-1.png")])
def test_a_wrong_method_answers_a_json_405(db, method, path):
    response = getattr(Client(), method)(path)
    assert response.status_code in (401, 405)  # a key is checked first where one is needed
    if response.status_code == 405:
        assert json_error(response)["code"] == "method_not_allowed"
    else:
        assert json_error(response)["code"] == "missing_api_key"


def test_a_wrong_method_with_a_key_answers_a_json_405(db):
    response = api_client(make_user("methods@example.com")).post(ACCOUNT)
    assert response.status_code == 405 and json_error(response)["code"] == "method_not_allowed"


@pytest.mark.parametrize("accept", ["text/html", "image/png", "application/xml"])
def test_an_accept_header_the_api_cannot_satisfy_is_answered_in_json_not_a_406_or_500(db, accept):
    response = api_client(make_user("accept@example.com")).get(ACCOUNT, HTTP_ACCEPT=accept)
    assert response.status_code == 200 and response["Content-Type"] == "application/json"


def test_a_json_body_over_the_size_limit_is_413_request_too_large(db):
    client = api_client(make_user("big@example.com"))
    body = json.dumps({"image_url": "https://a.example/" + "a" * 3_000_000, "scene_prompt": "x"})
    response = client.post(POST, body, content_type="application/json")
    assert response.status_code == 413 and json_error(response)["code"] == "request_too_large"


@pytest.mark.parametrize(("status", "code"), [(400, "invalid_request"), (404, "not_found"),
                                              (405, "method_not_allowed"), (500, "internal_error")])
def test_an_html_error_page_under_v1_is_replaced_by_the_json_shape(status, code):
    request = RequestFactory().get("/v1/anything")
    request.request_id = "req_" + "0" * 24
    page = HttpResponse("<h1>Django's page</h1>", status=status, content_type="text/html")
    response = ApiErrorShapeMiddleware(lambda _: page)(request)
    assert response.status_code == status
    assert json_error(response) == {**json_error(response), "code": code, "request_id": request.request_id}


def test_an_html_error_page_outside_the_api_is_left_alone():
    request = RequestFactory().get("/dashboard/")
    page = HttpResponseServerError("<h1>styled</h1>")
    assert ApiErrorShapeMiddleware(lambda _: page)(request) is page


# --- form fields: the spellings OpenAPI serialises, and no others -----------------------


@pytest.mark.parametrize(("fields", "param"), [({"preserve_shadow": "1"}, "preserve_shadow"),
                                               ({"preserve_shadow": "True"}, "preserve_shadow"),
                                               ({"seed": "+7"}, "seed"), ({"seed": " 7"}, "seed"),
                                               ({"seed": ""}, "seed"), ({"output_format": ""}, "output_format"),
                                               ({"image_url": ""}, "image_url")])
def test_a_form_field_spelled_otherwise_or_left_blank_is_400_naming_it(db, fields, param):
    response = post_render(api_client(make_user("forms@example.com")), image=product_png(), **fields)
    assert response.status_code == 400
    assert json_error(response)["param"] == param


def test_an_empty_upload_is_422_invalid_image_like_any_bytes_that_do_not_decode(db):
    response = post_render(api_client(make_user("empty@example.com")), image=b"")
    assert response.status_code == 422 and json_error(response)["code"] == "invalid_image"
