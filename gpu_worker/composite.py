"""The exact composite and the output encoders.

``out = alpha * F + (1 - alpha) * (B * shadow)`` at the source's full resolution, where F
is the estimated foreground. Wherever alpha is exactly 1 the output pixel IS the source
pixel (copied, not recomputed, so no rounding can touch it); where alpha is 0 it is the
background. The diffusion model's pixels never reach the subject.

PNG and WebP (lossless, VP8L) keep that promise on disk. JPEG is offered for size and
does not: a lossy codec changes every pixel a little. Outputs carry no metadata (no
EXIF, no text, no XMP); the values are sRGB, and PNG files say so with an sRGB chunk.
"""

from __future__ import annotations

import io
import zlib

import numpy as np
from PIL import Image

from gpu_worker.errors import RenderError

CONTENT_TYPES: dict[str, str] = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
# Rows per strip: bounds the float temporaries to ~40 MB even for a 24 MP image.
_STRIP_PIXELS = 3_000_000
# zlib level 1 encodes a 24 MP PNG ~4x faster than the default 6 for ~10% more bytes.
PNG_COMPRESS_LEVEL = 1
JPEG_QUALITY = 92
# For lossless WebP, quality is encoder effort, not fidelity. Measured on a 24 MP photo-like
# image (2 shared cores): method 0 took 1.7 s for 10% fewer bytes than our PNG (2.2 s);
# method 1 with quality 0 took 3.5-4.7 s for 30% fewer; quality 20-50 or methods 2-4
# took longer for the same bytes, and quality 100 took over a minute.
WEBP_LOSSLESS_METHOD = 1
WEBP_LOSSLESS_EFFORT = 0
# Largest input the worker decodes (the web side caps uploads at 40 MP).
MAX_INPUT_PIXELS = 50_000_000


def compose(image: np.ndarray, alpha: np.ndarray, foreground: np.ndarray,
            background: np.ndarray, shadow: np.ndarray | None = None) -> np.ndarray:
    """Composes the subject over the (shadowed) background; returns HxWx3 uint8.

    image: HxWx3 uint8 source; alpha: HxW float 0..1; foreground, background: HxWx3
    float 0..1; shadow: HxW float multiplier (1 = no shadow) or None.
    """
    height, width = image.shape[:2]
    for name, array, shape in (("alpha", alpha, (height, width)),
                               ("foreground", foreground, (height, width, 3)),
                               ("background", background, (height, width, 3))):
        if array.shape != shape:
            raise ValueError(f"{name} has shape {array.shape}, expected {shape}")
    if shadow is not None and shadow.shape != (height, width):
        raise ValueError(f"shadow has shape {shadow.shape}, expected {(height, width)}")
    out = np.empty((height, width, 3), np.uint8)
    rows = max(1, _STRIP_PIXELS // max(1, width))
    for top in range(0, height, rows):
        s = slice(top, min(height, top + rows))
        a = alpha[s].astype(np.float32)[..., None]
        back = background[s].astype(np.float32)
        if shadow is not None:
            back = back * shadow[s].astype(np.float32)[..., None]
        mixed = foreground[s].astype(np.float32) * a + back * (1.0 - a)
        strip = np.clip(mixed * 255.0 + 0.5, 0.0, 255.0).astype(np.uint8)
        opaque = alpha[s] >= 1.0
        strip[opaque] = image[s][opaque]
        out[s] = strip
    return out


def _png_srgb_chunk() -> bytes:
    body = b"sRGB" + b"\x00"  # rendering intent: perceptual
    return len(body[4:]).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")


def _insert_after_ihdr(png: bytes, chunk: bytes) -> bytes:
    # Signature (8 bytes) + IHDR (4 length + 4 type + 13 data + 4 CRC = 25 bytes); the
    # sRGB chunk must come before IDAT, and right after IHDR is always allowed.
    if png[12:16] != b"IHDR":
        raise ValueError("not a PNG starting with IHDR")
    return png[:33] + chunk + png[33:]


def encode_image(image: np.ndarray, output_format: str) -> tuple[bytes, str]:
    """Encodes an HxWx3 uint8 array; returns (bytes, content type)."""
    if output_format not in CONTENT_TYPES:
        raise ValueError(f"unknown output format {output_format!r}")
    picture = Image.fromarray(np.ascontiguousarray(image), "RGB")
    buffer = io.BytesIO()
    if output_format == "png":
        picture.save(buffer, "PNG", compress_level=PNG_COMPRESS_LEVEL)
        return _insert_after_ihdr(buffer.getvalue(), _png_srgb_chunk()), CONTENT_TYPES["png"]
    if output_format == "jpeg":
        # 4:4:4 chroma: subsampling would smear colour across exactly the edges we sell.
        picture.save(buffer, "JPEG", quality=JPEG_QUALITY, subsampling=0, optimize=False)
    else:
        # Lossless, so fully opaque subject pixels stay bit-identical as in PNG. exact=True
        # would only keep the colour under fully transparent pixels; the picture is RGB,
        # with no alpha, so there are none.
        picture.save(buffer, "WEBP", lossless=True, quality=WEBP_LOSSLESS_EFFORT,
                     method=WEBP_LOSSLESS_METHOD)
    return buffer.getvalue(), CONTENT_TYPES[output_format]


def encode_matte(alpha: np.ndarray) -> bytes:
    """The alpha matte as an 8-bit greyscale PNG (alpha float 0..1 or uint8)."""
    if alpha.dtype != np.uint8:
        alpha = np.round(np.clip(alpha, 0.0, 1.0) * 255.0).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(alpha), "L").save(
        buffer, "PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def decode_input(data: bytes) -> np.ndarray:
    """The stored input as HxWx3 uint8 RGB; RenderError("invalid_image") if it is not one.

    The web side stores a normalised 8-bit sRGB RGB PNG; greyscale and RGBA are accepted
    (converted), anything else is refused rather than guessed at.
    """
    try:
        with Image.open(io.BytesIO(data)) as picture:
            if picture.format not in ("PNG", "JPEG", "WEBP"):
                raise RenderError("invalid_image", f"input is {picture.format}, not PNG")
            if picture.width * picture.height > MAX_INPUT_PIXELS:
                raise RenderError("invalid_image", "input is larger than the worker accepts")
            if picture.mode not in ("RGB", "L", "RGBA"):
                raise RenderError("invalid_image", f"input mode {picture.mode} is not 8-bit RGB")
            picture.load()
            if picture.mode != "RGB":
                picture = picture.convert("RGB")
            array = np.asarray(picture, dtype=np.uint8)
    except RenderError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise RenderError("invalid_image", f"input cannot be decoded: {exc}") from exc
    if array.ndim != 3 or min(array.shape[:2]) < 1:
        raise RenderError("invalid_image", "input has no pixels")
    return np.ascontiguousarray(array)
