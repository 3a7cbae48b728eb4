"""The docs page's reference tables, generated from the code they describe.

The request fields come from ``RenderRequestSerializer`` (names, types, limits,
defaults, help texts), the render object's fields from ``RenderSerializer``, and the
error codes from ``platform_site.api_errors.REGISTRY`` after every app's ``errors``
module has registered its codes. A field or code added to the API shows up here
without anyone editing a template, so the docs cannot drift from the API.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.utils.html import escape
from django.utils.module_loading import autodiscover_modules
from django.utils.safestring import SafeString, mark_safe
from rest_framework import serializers

from imaging.serializers import RenderRequestSerializer, RenderSerializer
from platform_site.api_errors import REGISTRY

# Render-object fields computed by methods carry no help text of their own.
RENDER_FIELD_NOTES: dict[str, tuple[str, str]] = {
    "id": ("string", "The render's public id, e.g. rnd_5f3a…; use it with GET /v1/renders/{id}."),
    "object": ("string", "Always \"render\"."),
    "status": ("string", "queued, running, succeeded or failed. Only succeeded renders are charged."),
    "status_url": ("URL", "Where to GET this render again; poll it after a 202."),
    "output_url": ("URL or null", "Signed link to the result image, valid until expires_at; "
                                  "null unless the render succeeded."),
    "matte_url": ("URL or null", "Signed link to the alpha matte (8-bit PNG; white is subject); "
                                 "null unless the render succeeded."),
    "expires_at": ("date-time or null", "When output_url and matte_url stop working; GET the render for fresh links."),
    "width": ("integer or null", "Width of the result in pixels (the input's width)."),
    "height": ("integer or null", "Height of the result in pixels (the input's height)."),
    "format": ("string", "png, jpeg or webp, as requested."),
    "seed": ("integer or null", "The seed the scene was generated with; send it again for the same scene."),
    "credits_charged": ("integer", "22 when the render succeeded, 0 otherwise."),
    "credits_remaining": ("integer or null", "Your available credits after this render."),
    "timings_ms": ("object", "Milliseconds per worker stage: read, decode, matting, scene, compose, "
                             "encode, verify, write and total."),
    "scene": ("object or null", "{engine, prompt, seed}: studio for plain and studio backdrops, the "
                                "diffusion model's name for scene prompts."),
    "subject": ("object or null", "{bbox, coverage}: the subject's box [x0, y0, x1, y1] in pixels and "
                                  "its share of the image."),
    "exactness": ("object or null", "{opaque_pixels, exact_pixels, share}: how many fully opaque subject "
                                    "pixels of the output file are bit-identical to the source (1.0 for "
                                    "png and webp)."),
    "shadow": ("object or null", "{state, strength}: kept, dropped_hard, none_found or not_requested."),
    "light": ("object or null", "{direction, confidence}: left, right, above or front."),
    "scene_generated": ("boolean or null", "Whether a new background was painted (false only for the "
                                           "echo test engine)."),
    "created_at": ("date-time", "When the render was accepted."),
    "finished_at": ("date-time or null", "When it succeeded or failed."),
    "error": ("object or null", "{code, message} when the render failed; see the error codes below."),
}


_BACKTICKS = re.compile(r"`([^`]+)`")


def inline_code(text: str) -> SafeString:
    """Escapes ``text`` and turns its `backticked` words (Markdown, as the registry writes them) into <code>."""
    return mark_safe(_BACKTICKS.sub(lambda m: f"<code>{m.group(1)}</code>", escape(text)))


@dataclass(frozen=True)
class DocumentedCode:
    code: str
    status: int
    type: str
    description: str
    description_html: SafeString


@dataclass(frozen=True)
class FieldDoc:
    name: str
    type: str
    required: str
    description: str


def _type_of(field: serializers.Field) -> str:
    if isinstance(field, serializers.ChoiceField):
        return "one of " + ", ".join(str(choice) for choice in field.choices)
    if isinstance(field, serializers.BooleanField):
        return "boolean"
    if isinstance(field, serializers.IntegerField):
        low, high = getattr(field, "min_value", None), getattr(field, "max_value", None)
        return f"integer {low}…{high}" if low is not None and high is not None else "integer"
    if isinstance(field, serializers.FileField):
        return "file (multipart)"
    if isinstance(field, serializers.CharField):
        return f"string, at most {field.max_length:,} characters" if field.max_length else "string"
    return field.__class__.__name__.replace("Field", "").lower() or "value"


def _required_of(field: serializers.Field) -> str:
    if field.required:
        return "required"
    default = field.default
    if default is serializers.empty or default is None:
        return "optional"
    if isinstance(default, bool):
        default = "true" if default else "false"
    return f"optional, default {default}"


def request_fields() -> list[FieldDoc]:
    """The body of POST /v1/image/replace-background, field by field."""
    return [
        FieldDoc(name, _type_of(field), _required_of(field), str(field.help_text or ""))
        for name, field in RenderRequestSerializer().fields.items()
    ]


def render_fields() -> list[FieldDoc]:
    """The render object, field by field, in the order the API sends them."""
    docs = []
    for name, field in RenderSerializer().fields.items():
        kind, note = RENDER_FIELD_NOTES.get(name, (_type_of(field), ""))
        docs.append(FieldDoc(name, kind, "", note or str(field.help_text or "")))
    return docs


def error_codes() -> list[DocumentedCode]:
    """Every registered code, by HTTP status then name."""
    autodiscover_modules("errors")
    import imaging.render_errors  # noqa: F401  (not named errors.py, so not autodiscovered)

    return [
        DocumentedCode(e.code, e.status, e.type, e.description, inline_code(e.description))
        for e in sorted(REGISTRY.values(), key=lambda entry: (entry.status, entry.code))
    ]
