"""OpenAPI documentation of the render API, generated from the code it describes.

Error responses are built from ``platform_site.api_errors.REGISTRY``, so a code that
is registered is documented with its status, and the docs cannot drift from what the
API returns. A postprocessing hook adds the whole registry as a table to the API's
description and as the enum of ``error.code``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers

from imaging.serializers import ImageUrlField, RenderRequestSerializer, RenderSerializer, UploadField
from platform_site.api_errors import REGISTRY, error_body

COMMON_CODES = ("missing_api_key", "invalid_api_key", "rate_limited", "internal_error")
REQUEST_CODES = ("invalid_request", "invalid_json", "unsupported_media_type", "method_not_allowed")
INPUT_CODES = ("image_url_forbidden", "image_unreachable", "image_too_large", "unsupported_image",
               "invalid_image")
IDEMPOTENCY_CODES = ("idempotency_key_reused", "idempotency_key_in_use")
MONEY_CODES = ("insufficient_credits",)
RENDER_FAILURE_CODES = ("render_failed", "model_unavailable", "no_subject_found", "backdrop_not_plain",
                        "worker_lost", "render_timeout", "queue_unavailable")
FILE_CODES = ("url_expired", "url_signature_invalid", "not_found", "storage_unavailable")
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


class RenderJsonRequestSerializer(RenderRequestSerializer):
    image_url = ImageUrlField(max_length=2048, help_text="http(s) URL of the input image.")
    image_file = None


class RenderMultipartRequestSerializer(RenderRequestSerializer):
    image_url = None
    image_file = UploadField(help_text="The input image (JPEG, PNG, WebP, HEIC/HEIF or AVIF).")


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
    "Idempotency-Key", OpenApiTypes.STR, OpenApiParameter.HEADER, required=False,
    description=("At most 255 characters. The same key and body within 24 hours returns the first "
                 "response again (with `Idempotent-Replayed: true`) without a second render or charge."),
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
        "multipart/form-data": RenderMultipartRequestSerializer,
    },
    parameters=[IDEMPOTENCY_PARAMETER],
    responses={
        200: OpenApiResponse(RenderSerializer, description="The render succeeded."),
        202: OpenApiResponse(RenderSerializer, description=(
            "Still running after the sync window (or the platform could not follow it to its end "
            "just now); poll `status_url` after `Retry-After` seconds.")),
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
    responses={200: RenderSerializer, **error_responses(COMMON_CODES + ("not_found",))},
    tags=["renders"],
)

signed_file_schema = extend_schema(
    operation_id="download_render_file",
    summary="Download an output or matte through a signed link",
    description="Links come from the render object and expire at its `expires_at`. No API key needed.",
    parameters=[
        OpenApiParameter("expires", OpenApiTypes.INT, OpenApiParameter.QUERY, required=True),
        OpenApiParameter("signature", OpenApiTypes.STR, OpenApiParameter.QUERY, required=True),
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


SCHEMA_SETTINGS = {
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "imaging.schema.add_error_registry",
    ],
}
