"""The render request (what a client may send) and the render object (what it gets).

Request fields are strict about JSON types: ``"seed": "7"``, ``"preserve_shadow": 1``
and ``"scene_prompt": 5`` are 400 ``invalid_request`` naming the field, because a
client that sends the wrong type has a bug we should show it, not guess around.
Multipart forms carry only strings, so there the same fields accept the spellings
OpenAPI serialises them to, and no others: ``true``/``false``, decimal integers.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone as dt_timezone
from typing import Any

from django.conf import settings
from django.core.validators import RegexValidator
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.fields import empty

from imaging.models import OutputFormat, Render, RenderStatus
from imaging.signed_urls import signed_url

MAX_URL_LENGTH = 2048
MAX_PROMPT_LENGTH = 2000
MAX_SEED = 2**32 - 1
# A form integer as OpenAPI serialises one: decimal digits, a minus sign if negative.
_INTEGER = re.compile(r"-?[0-9]{1,20}")

# The constraints below are the schema's patterns (drf-spectacular writes \A and \Z as
# ^ and $), and the server checks the same expressions, so a generated client or
# validator refuses exactly what the API would.
#
# image_url: http or https, a host part, no spaces or control characters. Whether the
# URL can be fetched (a valid host, a public address) is decided when it is fetched:
# 422, never 400.
IMAGE_URL_PATTERN = r"\A[Hh][Tt][Tt][Pp][Ss]?://[^/?#\x00-\x20\x7f][^\x00-\x20\x7f]*\Z"
# Python's str.isspace() set, which str.strip() (and so DRF's blank check) uses; written
# out because JavaScript's \s is a different set.
_SPACE = r"\t\n\x0b\x0c\r\x1c-\x1f\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# scene_prompt: at least one character that is not white space, and no NUL anywhere.
PROMPT_PATTERN = rf"\A[^\x00]*[^\x00{_SPACE}][^\x00]*\Z"


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
    # Exactly how OpenAPI serialises a boolean into a form field, and how the schema
    # documents it; "1", "yes" or "True" would be a client bug to show, not to guess.
    _FORM = {"true": True, "false": False}

    def to_internal_value(self, data: Any) -> bool:
        if isinstance(data, bool):
            return data
        if _is_form(self) and isinstance(data, str) and data in self._FORM:
            return self._FORM[data]
        self.fail("invalid", input=data)
        raise AssertionError  # fail() always raises


class StrictIntegerField(serializers.IntegerField):
    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool):
            self.fail("invalid")
        if isinstance(data, int):
            value = data
        elif _is_form(self) and isinstance(data, str) and _INTEGER.fullmatch(data):
            value = int(data)
        else:
            self.fail("invalid")
        return value  # range validators run after this, in run_validation


class StrictChoiceField(serializers.ChoiceField):
    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            self.fail("invalid_choice", input=data)
        return super().to_internal_value(data)


@extend_schema_field({"type": "string", "format": "uri"})
class ImageUrlField(StrictCharField):
    """Shape only (``IMAGE_URL_PATTERN``); whether the address may be fetched is ``imaging.fetch``'s
    decision, and a URL it cannot even parse (an IPv6 literal that is not one) is its 422."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.validators.append(RegexValidator(IMAGE_URL_PATTERN, "The URL has no host."))

    def to_internal_value(self, data: Any) -> str:
        value = super().to_internal_value(data)
        if any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
            raise serializers.ValidationError("The URL contains spaces or control characters.")
        if _scheme_of(value) not in ("http", "https"):
            raise serializers.ValidationError("Only http and https URLs can be fetched.")
        return value


def _scheme_of(value: str) -> str:
    """The scheme of ``value``, lower case, as ``urlsplit`` reads it (without its host checks)."""
    scheme, sep, _ = value.partition(":")
    return scheme.lower() if sep and scheme.isascii() and scheme[:1].isalpha() else ""


class PromptField(StrictCharField):
    """``PROMPT_PATTERN``, and the length counted as sent, before surrounding spaces are trimmed."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.validators.append(RegexValidator(PROMPT_PATTERN, "The prompt must not be blank."))

    def to_internal_value(self, data: Any) -> str:
        if isinstance(data, str) and self.max_length is not None and len(data) > self.max_length:
            self.fail("max_length", max_length=self.max_length)
        return super().to_internal_value(data)


@extend_schema_field({"type": "string", "format": "binary"})
class UploadField(serializers.FileField):
    """A multipart file upload (documented as binary, not as a URL)."""


class RenderRequestSerializer(serializers.Serializer):
    """Body of POST /v1/image/replace-background (JSON, or multipart with image_file)."""

    image_url = ImageUrlField(
        required=False, max_length=MAX_URL_LENGTH, trim_whitespace=False,
        help_text=("http(s) URL of the input image: JPEG, PNG, WebP, HEIC/HEIF or AVIF (GIF, TIFF "
                   "and others are refused). Exactly one of image_url and image_file."),
    )
    # An empty upload is like any other file that is not an image: 422 invalid_image, from
    # the decoder, which the schema documents (a generated binary may be empty).
    image_file = UploadField(
        required=False, allow_empty_file=True, use_url=False,
        help_text=("The input image as a multipart upload: JPEG, PNG, WebP, HEIC/HEIF or AVIF (GIF, "
                   "TIFF and others are refused). Exactly one of image_url and image_file."),
    )
    scene_prompt = PromptField(
        min_length=1, max_length=MAX_PROMPT_LENGTH,
        help_text=("What the new background should show: 1 to 2,000 characters, at least one of "
                   "them not white space, and no NUL character."),
    )
    preserve_shadow = StrictBooleanField(
        required=False, default=True,
        help_text="Keep a natural contact shadow under the subject.",
    )
    output_format = StrictChoiceField(
        choices=OutputFormat.choices, required=False, default=OutputFormat.PNG,
        help_text=("png (default) and webp (lossless) keep the subject's pixels exact on disk; "
                   "jpeg is smaller but lossy and does not."),
    )
    seed = StrictIntegerField(
        required=False, allow_null=True, default=None, min_value=0, max_value=MAX_SEED,
        help_text="Seed for a reproducible scene; a random one is chosen (and returned) when absent.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        sent = set(self.initial_data) if hasattr(self.initial_data, "keys") else set()
        unknown = sorted(sent - set(self.fields))
        if unknown:
            raise serializers.ValidationError({unknown[0]: "Unknown field."})
        if self.context.get("form_encoded") and hasattr(self.initial_data, "lists"):
            # DRF reads an empty form field as "not sent" (an HTML form's untouched input);
            # to an API client it is a value, and the schema's constraints refuse it.
            blank = sorted(name for name, values in self.initial_data.lists() if "" in values)
            if blank:
                raise serializers.ValidationError({blank[0]: "This field may not be blank."})
        has_url = bool(attrs.get("image_url"))
        has_file = attrs.get("image_file") is not None
        if (has_url and has_file) or {"image_url", "image_file"} <= sent:
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


SHADOW_STATES = ("kept", "dropped_hard", "none_found", "not_requested")
LIGHT_DIRECTIONS = ("left", "right", "above", "front")
# The public stage timings, in the order they run (gpu_worker.tasks.PUBLIC_TIMINGS).
TIMING_STAGES = ("read", "decode", "matting", "scene", "compose", "encode", "verify", "write",
                 "total")


class SceneSerializer(serializers.Serializer):
    engine = serializers.CharField(help_text=(
        "What painted the background: studio (plain and studio backdrops, CPU) or the "
        "diffusion model's name (scene prompts), e.g. sdxl-inpainting; echo in tests."))
    prompt = serializers.CharField(help_text="The scene prompt the engine was given.")
    seed = serializers.IntegerField(help_text="Send it again with the same prompt for the same scene.")


class SubjectSerializer(serializers.Serializer):
    bbox = serializers.ListField(
        child=serializers.IntegerField(min_value=0), min_length=4, max_length=4, allow_null=True,
        help_text="[x0, y0, x1, y1] in pixels of the subject's opaque part (x1, y1 exclusive); "
                  "null when nothing was found.")
    coverage = serializers.FloatField(min_value=0, max_value=1,
                                      help_text="The subject's share of the image (mean alpha), 0..1.")


class ExactnessSerializer(serializers.Serializer):
    opaque_pixels = serializers.IntegerField(
        min_value=0, help_text="Pixels of the subject that are fully opaque (alpha 255).")
    exact_pixels = serializers.IntegerField(
        min_value=0, help_text="Of those, how many are bit-identical to the source in the output file.")
    share = serializers.FloatField(
        min_value=0, max_value=1, allow_null=True,
        help_text="exact_pixels / opaque_pixels, measured by decoding this call's output file: "
                  "1.0 for png and webp, lower for jpeg; null when no pixel is fully opaque.")


class ShadowSerializer(serializers.Serializer):
    state = serializers.ChoiceField(
        choices=list(SHADOW_STATES),
        help_text=("kept: the soft contact shadow was carried onto the new scene; "
                   "dropped_hard: a hard cast shadow was found and dropped (it would fight "
                   "the new scene's light); none_found: the photo had none; not_requested: "
                   "preserve_shadow was false and no trace of the old shadow remains."))
    strength = serializers.FloatField(min_value=0, max_value=1,
                                      help_text="The shadow's deepest darkening, 0..1.")


class LightSerializer(serializers.Serializer):
    direction = serializers.ChoiceField(
        choices=list(LIGHT_DIRECTIONS), allow_null=True,
        help_text="Where the scene's light comes from: from the prompt, else estimated from the "
                  "subject's shading; null when it could not be told.")
    confidence = serializers.FloatField(
        min_value=0, max_value=1, allow_null=True,
        help_text="1.0 when the prompt named the direction; otherwise how clear the estimate was.")


class TimingsSerializer(serializers.Serializer):
    """Each stage is present when it ran; ``total`` always is for a finished render."""

    read = serializers.IntegerField(required=False, help_text="Reading the input from storage.")
    decode = serializers.IntegerField(required=False)
    matting = serializers.IntegerField(required=False, help_text="Cutting out the subject.")
    scene = serializers.IntegerField(required=False, help_text="Painting the background.")
    compose = serializers.IntegerField(required=False)
    encode = serializers.IntegerField(required=False)
    verify = serializers.IntegerField(required=False, help_text="Measuring exactness on the encoded file.")
    write = serializers.IntegerField(required=False)
    total = serializers.IntegerField(required=False, help_text="The worker's whole time on the render.")


def _share(value: Any) -> float | None:
    """A number clamped to 0..1, or None when the worker sent something else."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return min(1.0, max(0.0, float(value)))


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def public_result(render: Render) -> dict[str, Any]:
    """The render's result parts, read field by field out of what the worker stored.

    Only documented keys with the documented types come out, so a worker of another
    version, or a render stored before these parts existed, can never leak internal
    facts or break a generated client. Every part is null until the render succeeded.
    """
    if render.status != RenderStatus.SUCCEEDED:
        return {"scene": None, "subject": None, "exactness": None, "shadow": None, "light": None}
    scene = render.scene if isinstance(render.scene, dict) else {}
    subject = render.subject if isinstance(render.subject, dict) else {}
    exact = render.exactness if isinstance(render.exactness, dict) else {}
    # Renders from before these parts had theirs read out of the old facts (migration 0003).
    shadow = render.shadow if isinstance(render.shadow, dict) else {}
    light = render.light if isinstance(render.light, dict) else {}
    bbox = subject.get("bbox")
    seed = render.seed if render.seed is not None else render.requested_seed
    return {
        "scene": {"engine": str(scene.get("engine") or (render.engine or {}).get("scene") or ""),
                  "prompt": str(scene.get("prompt") or render.scene_prompt),
                  "seed": scene["seed"] if isinstance(scene.get("seed"), int) else seed},
        "subject": {"bbox": ([int(v) for v in bbox] if isinstance(bbox, list) and len(bbox) == 4
                             and all(isinstance(v, int) for v in bbox) else None),
                    "coverage": _share(subject.get("coverage")) or 0.0},
        "exactness": ({"opaque_pixels": _count(exact.get("opaque_pixels")),
                       "exact_pixels": _count(exact.get("exact_pixels")),
                       "share": _share(exact.get("share"))} if exact else None),
        "shadow": ({"state": shadow["state"], "strength": _share(shadow.get("strength")) or 0.0}
                   if shadow.get("state") in SHADOW_STATES else None),
        "light": ({"direction": light["direction"] if light.get("direction") in LIGHT_DIRECTIONS else None,
                   "confidence": _share(light.get("confidence"))} if light else None),
    }


def public_timings(render: Render) -> dict[str, int]:
    timings = render.timings_ms if isinstance(render.timings_ms, dict) else {}
    return {stage: int(timings[stage]) for stage in TIMING_STAGES
            if isinstance(timings.get(stage), (int, float)) and not isinstance(timings.get(stage), bool)}


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
    timings_ms = TimingsSerializer(help_text="Milliseconds per worker stage; empty until the render ran.")
    scene = SceneSerializer(allow_null=True, help_text="Which engine painted the scene, from what; "
                                                       "null until succeeded.")
    subject = SubjectSerializer(allow_null=True, help_text="Where the subject is; null until succeeded.")
    exactness = ExactnessSerializer(allow_null=True, help_text=(
        "How many fully opaque subject pixels of the output file equal the source; "
        "null until succeeded."))
    shadow = ShadowSerializer(allow_null=True, help_text=(
        "What was done with the photo's shadow; null until succeeded."))
    light = LightSerializer(allow_null=True, help_text="The light the scene was painted with; "
                                                       "null until succeeded or when not known.")
    scene_generated = serializers.BooleanField(allow_null=True, help_text=(
        "Whether a new background was painted (false only for the echo test engine)."))
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
            "timings_ms": public_timings(render),
            **public_result(render),
            "scene_generated": render.scene_generated,
            "created_at": _iso(render.created_at),
            "finished_at": _iso(render.finished_at),
            "error": {"code": render.error_code, "message": render.error_message} if failed else None,
        }
