"""The render request (what a client may send) and the render object (what it gets).

Request fields are strict about JSON types: ``"seed": "7"``, ``"preserve_shadow": 1``
and ``"scene_prompt": 5`` are 400 ``invalid_request`` naming the field, because a
client that sends the wrong type has a bug we should show it, not guess around.
Multipart forms carry only strings, so there the same fields accept their usual
textual spellings (``true``/``false``, decimal integers).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone as dt_timezone
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.fields import empty

from imaging.models import OutputFormat, Render, RenderStatus
from imaging.signed_urls import signed_url

MAX_URL_LENGTH = 2048
MAX_PROMPT_LENGTH = 2000
MAX_SEED = 2**32 - 1
_INTEGER = re.compile(r"[+-]?\d{1,20}")


def _is_form(field: serializers.Field) -> bool:
    return bool(field.context.get("form_encoded"))


class StrictCharField(serializers.CharField):
    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    # DRF treats a checkbox missing from an HTML form as False; here a missing
    # field takes its documented default (true) in both encodings.
    default_empty_html = empty
    _FORM = {"true": True, "1": True, "false": False, "0": False}

    def to_internal_value(self, data: Any) -> bool:
        if isinstance(data, bool):
            return data
        if _is_form(self) and isinstance(data, str) and data.strip().lower() in self._FORM:
            return self._FORM[data.strip().lower()]
        self.fail("invalid", input=data)
        raise AssertionError  # fail() always raises


class StrictIntegerField(serializers.IntegerField):
    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool):
            self.fail("invalid")
        if isinstance(data, int):
            value = data
        elif _is_form(self) and isinstance(data, str) and _INTEGER.fullmatch(data.strip()):
            value = int(data.strip())
        else:
            self.fail("invalid")
        return value  # range validators run after this, in run_validation


class StrictChoiceField(serializers.ChoiceField):
    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            self.fail("invalid_choice", input=data)
        return super().to_internal_value(data)


class ImageUrlField(StrictCharField):
    """Shape only; whether the address may be fetched is ``imaging.fetch``'s decision."""

    def to_internal_value(self, data: Any) -> str:
        value = super().to_internal_value(data)
        if any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
            raise serializers.ValidationError("The URL contains spaces or control characters.")
        try:
            parts = urlsplit(value)
        except ValueError:
            raise serializers.ValidationError("This is not a valid URL.") from None
        if parts.scheme.lower() not in ("http", "https"):
            raise serializers.ValidationError("Only http and https URLs can be fetched.")
        if not parts.netloc:
            raise serializers.ValidationError("The URL has no host.")
        return value


@extend_schema_field({"type": "string", "format": "binary"})
class UploadField(serializers.FileField):
    """A multipart file upload (documented as binary, not as a URL)."""


class RenderRequestSerializer(serializers.Serializer):
    """Body of POST /v1/image/replace-background (JSON, or multipart with image_file)."""

    image_url = ImageUrlField(
        required=False, max_length=MAX_URL_LENGTH, trim_whitespace=False,
        help_text="http(s) URL of the input image. Exactly one of image_url and image_file.",
    )
    image_file = UploadField(
        required=False, allow_empty_file=False, use_url=False,
        help_text="The input image as a multipart upload. Exactly one of image_url and image_file.",
    )
    scene_prompt = StrictCharField(
        min_length=1, max_length=MAX_PROMPT_LENGTH,
        help_text="What the new background should show (1 to 2,000 characters, not blank).",
    )
    preserve_shadow = StrictBooleanField(
        required=False, default=True,
        help_text="Keep a natural contact shadow under the subject.",
    )
    output_format = StrictChoiceField(
        choices=OutputFormat.choices, required=False, default=OutputFormat.PNG,
        help_text="png (default) is the only format that keeps the subject's pixels exact on disk.",
    )
    seed = StrictIntegerField(
        required=False, allow_null=True, default=None, min_value=0, max_value=MAX_SEED,
        help_text="Seed for a reproducible scene; a random one is chosen (and returned) when absent.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(self.initial_data) - set(self.fields)) if hasattr(self.initial_data, "keys") else []
        if unknown:
            raise serializers.ValidationError({unknown[0]: "Unknown field."})
        has_url = bool(attrs.get("image_url"))
        has_file = attrs.get("image_file") is not None
        if has_url and has_file:
            raise serializers.ValidationError({"image_url": "Send image_url or image_file, not both."})
        if not has_url and not has_file:
            raise serializers.ValidationError({"image_url": "Send image_url, or upload image_file."})
        return attrs


class RenderErrorSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    text = value.astimezone(dt_timezone.utc).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


class ShadowSerializer(serializers.Serializer):
    state = serializers.ChoiceField(
        choices=["kept", "dropped_hard", "none_found", "not_requested"],
        help_text=("kept: the soft contact shadow was carried onto the new scene; "
                   "dropped_hard: a hard cast shadow was found and dropped (it would fight "
                   "the new scene's light); none_found: the photo had none; not_requested: "
                   "preserve_shadow was false and no trace of the old shadow remains."))
    strength = serializers.FloatField(help_text="The shadow's deepest darkening, 0..1.")


def _shadow(render: Render) -> dict[str, Any] | None:
    found = (render.subject or {}).get("shadow")
    if render.status != RenderStatus.SUCCEEDED or not isinstance(found, dict):
        return None
    if found.get("state") not in ("kept", "dropped_hard", "none_found", "not_requested"):
        return None
    return {"state": found["state"], "strength": float(found.get("strength", 0.0))}


class RenderSerializer(serializers.Serializer):
    """The render object.

    Context: ``base_url`` (scheme and host for file links) and ``credits_remaining``
    (the owner's available credits after this render, so clients need no second call).

    The declared fields are the documented schema (OpenAPI); ``to_representation``
    builds the same keys directly, because it runs on every render response and DRF's
    per-field machinery cost more than the rest of the response put together.
    ``tests/test_openapi_schema.py`` checks that the two agree.
    """

    id = serializers.CharField(help_text="Public id, e.g. rnd_...")
    object = serializers.CharField(help_text='Always "render".')
    status = serializers.ChoiceField(choices=RenderStatus.choices)
    status_url = serializers.URLField(help_text="GET it for the render's current state and fresh links.")
    output_url = serializers.URLField(allow_null=True, help_text="Signed link to the output; null until succeeded.")
    matte_url = serializers.URLField(allow_null=True, help_text="Signed link to the alpha matte (8-bit PNG).")
    expires_at = serializers.DateTimeField(allow_null=True, help_text="When output_url and matte_url stop working.")
    width = serializers.IntegerField(allow_null=True)
    height = serializers.IntegerField(allow_null=True)
    format = serializers.ChoiceField(choices=OutputFormat.choices)
    seed = serializers.IntegerField(allow_null=True, help_text="The seed used (also when none was sent).")
    credits_charged = serializers.IntegerField(help_text="22 for a success, 0 otherwise.")
    credits_remaining = serializers.IntegerField(allow_null=True, help_text="Available credits now.")
    timings_ms = serializers.DictField(child=serializers.FloatField(), help_text="Per-stage worker timings.")
    subject = serializers.DictField(help_text="Facts the worker reported, e.g. the light direction used.")
    scene_generated = serializers.BooleanField(allow_null=True)
    shadow = ShadowSerializer(allow_null=True, help_text=(
        "What was done with the photo's shadow; null until succeeded."))
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    error = RenderErrorSerializer(allow_null=True, help_text="Set when status is failed.")

    def to_representation(self, render: Render) -> dict[str, Any]:
        base = (self.context.get("base_url") or settings.SITE_URL).rstrip("/")
        output = matte = None
        if render.status == RenderStatus.SUCCEEDED and render.files_purged_at is None:
            output = signed_url(render.output_key, base_url=base)
            matte = signed_url(render.matte_key, base_url=base)
        failed = render.status == RenderStatus.FAILED
        return {
            "id": render.public_id,
            "object": "render",
            "status": render.status,
            "status_url": f"{base}/v1/renders/{render.public_id}",
            "output_url": output.url if output else None,
            "matte_url": matte.url if matte else None,
            "expires_at": _iso(output.expires_at) if output else None,
            "width": render.width,
            "height": render.height,
            "format": render.output_format,
            "seed": render.seed if render.seed is not None else render.requested_seed,
            "credits_charged": render.credits_charged,
            "credits_remaining": self.context.get("credits_remaining"),
            "timings_ms": render.timings_ms or {},
            "subject": render.subject or {},
            "scene_generated": render.scene_generated,
            "shadow": _shadow(render),
            "created_at": _iso(render.created_at),
            "finished_at": _iso(render.finished_at),
            "error": {"code": render.error_code, "message": render.error_message} if failed else None,
        }
