"""OpenAPI documentation of the render API, generated from the code it describes.

Error responses are built from ``platform_site.api_errors.REGISTRY``, so a code that
is registered is documented with its status, and the docs cannot drift from what the
API returns. A postprocessing hook adds the whole registry as a table to the API's
description and as the enum of ``error.code``.

The schema is the contract that clients are generated from and that schemathesis fuzzes
(``tests/test_schemathesis_fuzz.py``), so it states every constraint the API enforces
(patterns, lengths, ranges, enums, which body fields may appear together), every status
each operation can answer with the error body's schema, and every response header.
``strict_openapi_30`` rewrites what drf-spectacular emits that strict OpenAPI 3.0.3
readers refuse (``nullable`` beside ``allOf``, without ``type``).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiRequest,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
)
from rest_framework import serializers

from imaging.models import PUBLIC_ID_PATTERN
from imaging.serializers import (
    MAX_SEED,
    MAX_URL_LENGTH,
    ImageUrlField,
    RenderRequestSerializer,
    RenderSerializer,
    StrictIntegerField,
    UploadField,
)
from imaging.signed_urls import MAX_EXPIRES_DIGITS
from imaging.storage_keys import FILE_NAME_PATTERN, SERVABLE_FOLDERS
from platform_site.api_errors import REGISTRY, error_body

COMMON_CODES = ("missing_api_key", "invalid_api_key", "rate_limited", "internal_error")
REQUEST_CODES = ("invalid_request", "invalid_json", "request_too_large", "unsupported_media_type")
INPUT_CODES = ("image_url_forbidden", "image_unreachable", "image_too_large", "unsupported_image",
               "invalid_image")
IDEMPOTENCY_CODES = ("idempotency_key_reused", "idempotency_key_in_use")
MONEY_CODES = ("insufficient_credits",)
RENDER_FAILURE_CODES = ("render_failed", "model_unavailable", "no_subject_found", "backdrop_not_plain",
                        "worker_lost", "render_timeout", "queue_unavailable")
FILE_CODES = ("url_expired", "url_signature_invalid", "not_found", "storage_unavailable", "internal_error")
# Refused before anything is reserved: the queue or the storage cannot take a render now.
AVAILABILITY_CODES = ("storage_unavailable",)


class ErrorDetailSerializer(serializers.Serializer):
    type = serializers.CharField()
    code = serializers.CharField(help_text="Stable snake_case code; see the table in the API description.")
    message = serializers.CharField()
    param = serializers.CharField(allow_null=True, help_text="The field or header at fault, if any.")
    request_id = serializers.CharField(help_text="Also sent as the X-Request-Id header.")


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


class RenderErrorEnvelopeSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()
    render = RenderSerializer(required=False, help_text=(
        "Present when a render was created and failed inside the sync window; "
        "its status is `failed` and it cost nothing."))


class RenderStubSerializer(serializers.Serializer):
    """What a 202 carries when the full render object could not be built just then.

    Only these four fields (``additionalProperties: false``), so that exactly one of
    ``Render`` and ``RenderStub`` describes any 202 body.
    """

    id = serializers.CharField()
    object = serializers.CharField()
    status = serializers.CharField()
    status_url = serializers.URLField()


IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/webp", "image/heic", "image/heif", "image/avif")
IMAGE_LIMITS = (
    f"At most {settings.FETCH_MAX_BYTES:,} bytes, {settings.MAX_IMAGE_PIXELS:,} pixels and "
    f"{settings.MAX_IMAGE_SIDE:,} pixels a side (413 `image_too_large`). The format is decided "
    "from the bytes, not from the Content-Type or the name: JPEG, PNG, WebP, HEIC/HEIF or AVIF; "
    "GIF, TIFF, BMP and anything else are 415 `unsupported_image`, and bytes that do not decode "
    "are 422 `invalid_image`."
)


class RenderJsonRequestSerializer(RenderRequestSerializer):
    image_url = ImageUrlField(max_length=MAX_URL_LENGTH, trim_whitespace=False, help_text=(
        f"http(s) URL of the input image, at most {MAX_URL_LENGTH:,} characters, no spaces or control "
        "characters. The server fetches it: a host that is not public, a port other than 80 or 443, "
        "a URL that does not parse (a malformed IPv6 literal) are 422 `image_url_forbidden`; "
        "a failed fetch is 422 `image_unreachable`. " + IMAGE_LIMITS))
    image_file = None


# Exactly one of image_url and image_file is spelled by the media types: the JSON body
# requires image_url, the form image_file, and neither admits the other (nor any unknown
# field: CLOSED_SCHEMAS). A oneOf of an upload form and a URL form would say the same, but
# schemathesis 4 cannot draw binary parts through a oneOf ("Unsupported type: 'Binary'").
class RenderMultipartRequestSerializer(RenderRequestSerializer):
    """The form body: the image uploaded as `image_file`, never together with `image_url`
    (to name the image by URL, send the JSON body)."""

    image_url = None
    image_file = UploadField(help_text="The input image (JPEG, PNG, WebP, HEIC/HEIF or AVIF). " + IMAGE_LIMITS)
    # A form field cannot carry null: leave seed out for a random one.
    seed = StrictIntegerField(required=False, min_value=0, max_value=MAX_SEED, help_text=(
        "Seed for a reproducible scene, as decimal digits; a random one is chosen (and returned) "
        "when absent."))


def _present(codes: Iterable[str]) -> list[str]:
    return [code for code in codes if code in REGISTRY]


def error_responses(codes: Iterable[str], envelope: type[serializers.Serializer] = ErrorSerializer,
                    ) -> dict[int, OpenApiResponse]:
    """One documented response per status, listing each code of that status with an example."""
    by_status: dict[int, list[str]] = defaultdict(list)
    for code in _present(codes):
        by_status[REGISTRY[code].status].append(code)
    responses = {}
    for status, status_codes in sorted(by_status.items()):
        lines = [f"- `{code}`: {REGISTRY[code].description}" for code in status_codes]
        examples = [
            OpenApiExample(code, value=error_body(code, REGISTRY[code].description, "req_0123456789abcdef01234567"),
                           response_only=True, status_codes=[str(status)])
            for code in status_codes
        ]
        responses[status] = OpenApiResponse(envelope, description="\n".join(lines), examples=examples)
    return responses


IDEMPOTENCY_PARAMETER = OpenApiParameter(
    "Idempotency-Key",
    # Printable ASCII, 1 to 255 characters; no space at either end, which HTTP would strip.
    {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]([ -~]*[!-~])?$"},
    OpenApiParameter.HEADER, required=False,
    description=("1 to 255 printable ASCII characters (else 400). The same key and body within 24 hours "
                 "returns the first response again (with `Idempotent-Replayed: true`) without a second "
                 "render or charge; the same key with another body is 422 `idempotency_key_reused`, "
                 "and while its first request still waits, 409 `idempotency_key_in_use`."),
)
PREFER_PARAMETER = OpenApiParameter(
    "Prefer", {"type": "string", "maxLength": 200}, OpenApiParameter.HEADER, required=False,
    description=("`respond-async` (RFC 7240): answer 202 with `status_url` as soon as the render is "
                 "queued, without waiting; the answer carries `Preference-Applied: respond-async`. "
                 "For pipelines that poll or take webhooks. Other preferences are ignored."),
)
RENDER_ID_PARAMETER = OpenApiParameter(
    "render_id", {"type": "string", "pattern": f"^{PUBLIC_ID_PATTERN}$"}, OpenApiParameter.PATH,
    description="The render's `id`, e.g. `rnd_5f3a...`; anything else is 404.",
)

replace_background_schema = extend_schema(
    operation_id="replace_background",
    summary="Replace the background of an image",
    description=(
        "Cuts the subject out exactly and composes it onto a generated scene. Costs 22 credits, "
        "charged only when the render succeeds. Waits up to the sync window (55 s by default): "
        "200 with the finished render, or 202 with `status_url` and `Retry-After` while it still runs. "
        "A render that fails is answered with its error code and costs nothing. Once a render exists, "
        "every answer names it: a failure of ours after that point is a 202 with its `status_url`."
    ),
    request={
        "application/json": RenderJsonRequestSerializer,
        "multipart/form-data": OpenApiRequest(
            RenderMultipartRequestSerializer,
            encoding={"image_file": {"contentType": ", ".join(IMAGE_MEDIA_TYPES)}}),
    },
    parameters=[IDEMPOTENCY_PARAMETER, PREFER_PARAMETER],
    responses={
        200: OpenApiResponse(RenderSerializer, description="The render succeeded."),
        202: OpenApiResponse(
            PolymorphicProxySerializer(component_name="RenderAccepted", resource_type_field_name=None,
                                       serializers=[RenderSerializer, RenderStubSerializer]),
            description=(
                "Still running after the sync window, or at once with `Prefer: respond-async` "
                "(or the platform could not follow it to its end "
                "just now, when the body may be only `id`, `object`, `status` and `status_url`); "
                "poll `status_url` (also in `Location`) after `Retry-After` seconds.")),
        **error_responses(COMMON_CODES + REQUEST_CODES + INPUT_CODES + IDEMPOTENCY_CODES + MONEY_CODES
                          + RENDER_FAILURE_CODES + AVAILABILITY_CODES, envelope=RenderErrorEnvelopeSerializer),
    },
    tags=["renders"],
)

render_detail_schema = extend_schema(
    operation_id="retrieve_render",
    summary="Get a render",
    description=("The render object, with fresh signed output URLs. Only the owner's renders; "
                 "others are 404. A failed render is answered 200 with `status: failed` and `error`."),
    parameters=[RENDER_ID_PARAMETER],
    responses={200: RenderSerializer, **error_responses(COMMON_CODES + ("not_found",))},
    tags=["renders"],
)

signed_file_schema = extend_schema(
    operation_id="download_render_file",
    summary="Download an output or matte through a signed link",
    description="Links come from the render object and expire at its `expires_at`. No API key needed.",
    parameters=[
        OpenApiParameter("folder", {"type": "string", "enum": list(SERVABLE_FOLDERS)}, OpenApiParameter.PATH,
                         description="`outputs` or `mattes`, as in the link."),
        OpenApiParameter("name", {"type": "string", "pattern": f"^{FILE_NAME_PATTERN}$"}, OpenApiParameter.PATH,
                         description="The file's name, as in the link (mattes are always `.png`); "
                                     "any other name is 404."),
        OpenApiParameter("expires", {"type": "integer", "minimum": 0, "maximum": 10**MAX_EXPIRES_DIGITS - 1},
                         OpenApiParameter.QUERY, required=True,
                         description="Unix time the link stops working (403 `url_expired` after)."),
        OpenApiParameter("signature", {"type": "string", "pattern": "^[0-9a-f]{64}$"}, OpenApiParameter.QUERY,
                         required=True, description="The link's signature (403 `url_signature_invalid`)."),
    ],
    responses={
        (200, "image/png"): OpenApiResponse(OpenApiTypes.BINARY, description="The file."),
        (200, "image/jpeg"): OpenApiResponse(OpenApiTypes.BINARY),
        (200, "image/webp"): OpenApiResponse(OpenApiTypes.BINARY),
        **error_responses(FILE_CODES),
    },
    auth=[],
    tags=["renders"],
)


def add_error_registry(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """Postprocessing hook: every registered code, with its status, in the schema itself."""
    codes = sorted(REGISTRY.values(), key=lambda entry: (entry.status, entry.code))
    table = ["", "## Error codes", "", "| code | status | type | meaning |", "|---|---|---|---|"]
    table += [f"| `{e.code}` | {e.status} | {e.type} | {e.description} |" for e in codes]
    info = result.setdefault("info", {})
    info["description"] = (info.get("description") or "") + "\n" + "\n".join(table)
    info["x-error-codes"] = [
        {"code": e.code, "status": e.status, "type": e.type, "description": e.description} for e in codes
    ]
    detail = result.get("components", {}).get("schemas", {}).get("ErrorDetail")
    if detail is not None:
        detail["properties"]["code"]["enum"] = [e.code for e in codes]
    return result


# --- response headers ---------------------------------------------------------------

HEADERS: dict[str, dict[str, Any]] = {
    "X-Request-Id": {"description": "This request's id; error bodies repeat it as `request_id`.",
                     "schema": {"type": "string", "pattern": "^req_[0-9a-f]{24}$"}},
    "X-Credits-Charged": {"description": "Credits this render cost: 22 for a success, 0 otherwise.",
                          "schema": {"type": "integer", "minimum": 0}},
    "X-Credits-Remaining": {"description": "The key owner's available credits now (absent when they "
                                           "could not be read just then).",
                            "schema": {"type": "integer"}},
    "Retry-After": {"description": "Seconds to wait before trying again (or polling).",
                    "schema": {"type": "integer", "minimum": 1}},
    "Location": {"description": "The render's `status_url`.", "schema": {"type": "string", "format": "uri"}},
    "Idempotent-Replayed": {"description": "Present on an answer replayed for a repeated `Idempotency-Key`.",
                            "schema": {"type": "string", "enum": ["true"]}},
    "WWW-Authenticate": {"description": "The Bearer challenge.", "schema": {"type": "string"}},
    "Preference-Applied": {"description": "`respond-async` when the request's `Prefer` was honoured.",
                           "schema": {"type": "string", "enum": ["respond-async"]}},
}
RENDER_ANSWER_HEADERS = {"X-Credits-Charged": False, "X-Credits-Remaining": False, "Idempotent-Replayed": False}


def headers_for(operation_id: str, status: str) -> dict[str, bool]:
    """Response header -> required, for one documented response."""
    headers = {"X-Request-Id": True}
    if status == "401":
        headers["WWW-Authenticate"] = True
    if status == "429":
        headers["Retry-After"] = True
    if status == "409" and operation_id == "replace_background":
        headers["Retry-After"] = False
    if operation_id == "replace_background":
        failure_statuses = {str(REGISTRY[code].status) for code in _present(RENDER_FAILURE_CODES)}
        if status == "200":
            headers |= {**RENDER_ANSWER_HEADERS, "X-Credits-Charged": True}
        elif status == "202":
            headers |= {**RENDER_ANSWER_HEADERS, "X-Credits-Charged": True, "Retry-After": True,
                        "Location": True, "Preference-Applied": False}
        elif status in failure_statuses:
            headers |= RENDER_ANSWER_HEADERS
    if operation_id == "retrieve_render" and status == "200":
        headers |= {"X-Credits-Charged": True, "X-Credits-Remaining": False}
    return headers


def add_response_headers(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """Postprocessing hook: every response documents the headers it carries (``headers_for``)."""
    components = result.setdefault("components", {}).setdefault("headers", {})
    for name, header in HEADERS.items():
        components[name.replace("-", "")] = header
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                response["headers"] = {
                    name: ({"$ref": f"#/components/headers/{name.replace('-', '')}"} if not required else
                           {**HEADERS[name], "required": True})
                    for name, required in headers_for(operation.get("operationId", ""), status).items()
                }
    return result


# --- strict OpenAPI 3.0.3 ------------------------------------------------------------

NULL_SCHEMA = {"type": "string", "nullable": True, "enum": [None],
               "description": "null (OpenAPI 3.0 has no null type: a nullable type whose only value is null)."}


def _strict(node: Any) -> Any:
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _strict(value) for key, value in node.items()}
    if node.get("nullable") is True and "type" not in node:
        # OAS 3.0.3: nullable counts only beside type. "This or null" is spelled oneOf instead.
        rest = {key: value for key, value in node.items() if key != "nullable"}
        if "allOf" in rest and len(rest["allOf"]) == 1:
            rest["oneOf"] = [rest.pop("allOf")[0], {"$ref": "#/components/schemas/NullEnum"}]
        elif "oneOf" not in rest:
            rest = {"anyOf": [rest, {"$ref": "#/components/schemas/NullEnum"}]}
        return rest
    return node


def strict_openapi_30(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """Postprocessing hook: what strict OpenAPI 3.0.3 validators and schemathesis read as written.

    * ``nullable`` without ``type`` (drf-spectacular's nullable object, ``allOf: [$ref]``, and
      nullable enums) becomes ``oneOf: [$ref, NullEnum]``; ``NullEnum`` is a nullable type
      whose only value is null.
    * ``CLOSED_SCHEMAS`` forbid unknown fields: the API refuses them with 400, and so the
      JSON body (``image_url``) and the form (``image_file``) each admit exactly one image.
    """
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    result["paths"] = _strict(result.get("paths", {}))
    for name in list(schemas):
        schemas[name] = _strict(schemas[name])
    schemas["NullEnum"] = NULL_SCHEMA
    for name in CLOSED_SCHEMAS:
        if name in schemas:
            schemas[name]["additionalProperties"] = False
    return result


# Bodies whose every field is listed: the request bodies (the API refuses unknown fields
# with 400) and RenderStub (so that a 202 is exactly one of Render and RenderStub).
CLOSED_SCHEMAS = ("RenderJsonRequest", "RenderMultipartRequest", "RenderStub")


SCHEMA_SETTINGS = {
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "imaging.schema.add_error_registry",
        "imaging.schema.add_response_headers",
        "imaging.schema.strict_openapi_30",
    ],
}
