"""Turn untrusted image bytes into one well-defined input: 8-bit sRGB RGB pixels.

Everything a user can send ends up in the same shape here, so the GPU pipeline and the
"exact subject" promise deal with a single case: mode ``RGB``, 8 bits per channel,
sRGB, upright, no metadata.

Order of defence, cheapest first:

1. The format is decided from the magic bytes; only JPEG, PNG, WebP, HEIC and AVIF go
   further, and Pillow is told to try only that one plugin (``formats=``), so the EPS
   (Ghostscript), PSD, TIFF, PDF... parsers never see attacker bytes. HEIC is decoded by
   the pillow-heif plugin (libheif), registered below; AVIF by Pillow's own (libavif).
2. The dimensions are read by our own header parsing (``imaging.heif_header`` for the
   HEIC/AVIF boxes, which hold more than one size a decoder trusts) and checked against
   ``MAX_IMAGE_SIDE`` and the smaller of ``MAX_IMAGE_PIXELS`` and Pillow's own
   ``Image.MAX_IMAGE_PIXELS`` before Pillow opens the file, so a bomb header is refused
   without allocating or decoding anything, and whatever would raise Pillow's
   ``DecompressionBombWarning`` is already an ``image_too_large``. The size Pillow reads
   is checked the same way again, in case a file fooled our parser. This avoids
   ``warnings.catch_warnings``, which swaps process-wide state and is not thread-safe.
3. Pixels are decoded; any decoder failure (truncation, corrupt data) is
   ``invalid_image``.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from django.conf import settings
import pillow_heif
from PIL import Image, ImageCms, ImageOps

from imaging import errors  # noqa: F401  (registers the codes raised below)
from imaging import heif_header
from platform_site.api_errors import ApiError

# Once, at import, for the whole process: Image.open only ever reaches it through
# formats=["HEIF"] below. Thumbnails, depth maps and auxiliary images are never used,
# so libheif is not asked to describe them. pillow-heif applies the irot/imir rotation
# while decoding and resets the EXIF orientation to 1, so ``_apply_orientation`` does
# not turn the picture a second time; 10- and 12-bit pictures arrive as 8-bit.
pillow_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)

SUPPORTED = "JPEG, PNG, WebP, HEIC or AVIF"

_PILLOW_FORMAT = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "heic": "HEIF", "avif": "AVIF"}

# ftyp brands. A HEVC brand as the major brand, or among the compatible brands of the
# structural HEIF brands, is HEIC. AVIF only with the avif major brand: with any other
# libavif prefers a track (an animation) when the file has one, and tracks are not
# sized by ``heif_header``. (Every still-AVIF writer we know puts avif first.)
_HEVC_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"})
_HEIF_STRUCTURAL_BRANDS = frozenset({b"mif1", b"msf1"})
_AVIF_MAJOR_BRAND = b"avif"

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"

# Only used to word the 415 message; the decision is "not one of ours" either way.
_OTHER_FORMATS: tuple[tuple[bytes, int, str], ...] = (
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"BM", 0, "BMP"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
    (b"%PDF", 0, "PDF"),
    (b"%!PS", 0, "PostScript/EPS"),
    (b"\xc5\xd0\xd3\xc6", 0, "EPS"),
    (b"8BPS", 0, "PSD"),
    (b"\x00\x00\x01\x00", 0, "ICO"),
    (b"ftypavis", 4, "animated AVIF"),
    (b"ftypmif1", 4, "HEIF (neither HEVC-coded nor a plain AVIF)"),
    (b"ftypmsf1", 4, "HEIF sequence (neither HEVC-coded nor a plain AVIF)"),
    (b"ftypisom", 4, "MP4 video"),
    (b"ftypmp4", 4, "MP4 video"),
    (b"ftypqt  ", 4, "QuickTime video"),
    (b"\x00\x00\x00\x0cjP  ", 0, "JPEG 2000"),
    (b"\xff\x0a", 0, "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL ", 0, "JPEG XL"),
)

# Each scan of a progressive JPEG is a full pass over the coefficients, so a small file
# with thousands of tiny scans costs minutes of CPU. Encoders use about ten; an EXIF
# thumbnail or an MPO second picture adds a few more.
MAX_JPEG_SCANS = 100

_HIGH_BIT_DEPTH_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})

_ORIENTATION_TAG = 0x0112

_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
_MODE_FOR_COLOR_SPACE = {"RGB": "RGB", "CMYK": "CMYK", "GRAY": "L"}

# What Pillow raises for bytes it cannot decode. Only the Pillow calls are wrapped, so
# a bug in our own code is not disguised as a bad upload.
# libheif and libavif also raise RuntimeError (a stream that contradicts its header, a
# security limit, "Not implemented").
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error, IndexError,
                  RuntimeError)


@dataclass
class InputImage:
    """A checked, normalised input image.

    ``image`` is mode ``RGB``, 8-bit, sRGB, upright (EXIF orientation applied), with no
    metadata. ``had_alpha`` is True when the source had at least one pixel that was not
    fully opaque; those pixels were composited onto white (see ``load_image``).
    """

    image: Image.Image
    width: int
    height: int
    source_format: str
    had_alpha: bool


def sniff_format(head: bytes) -> str | None:
    """``"jpeg"``, ``"png"``, ``"webp"``, ``"heic"`` or ``"avif"`` from the first bytes, else None.

    A head shorter than the magic that matches as far as it goes counts as that format,
    so a file cut inside its signature is reported as truncated (422), not as foreign
    (415). Twelve bytes are enough for a final answer, except for a HEIF whose major
    brand is a structural one (``mif1``): its compatible brands decide, and a head that
    ends before them counts as HEIC for now (the fetcher only asks "could this be an
    image of ours?"; ``load_image`` sniffs the whole file).
    """
    if not head:
        return None
    for name, magic in (("png", _PNG_MAGIC), ("jpeg", _JPEG_MAGIC)):
        length = min(len(head), len(magic))
        if head[:length] == magic[:length]:
            return name
    riff = head[:4]
    if riff == b"RIFF"[: len(riff)]:
        webp = head[8:12]
        if webp == b"WEBP"[: len(webp)]:
            return "webp"
    return _sniff_heif(head)


def _sniff_heif(head: bytes) -> str | None:
    """``"heic"`` or ``"avif"`` from the ``ftyp`` brands (see ``_HEVC_BRANDS``), else None."""
    brands = heif_header.brands(head)
    if not brands:
        return None
    major, compatible = brands[0], brands[1:]
    if major == _AVIF_MAJOR_BRAND:
        return "avif"
    if major in _HEVC_BRANDS or _HEVC_BRANDS.intersection(compatible):
        return "heic"
    if major in _HEIF_STRUCTURAL_BRANDS and len(head) < int.from_bytes(head[:4], "big"):
        return "heic"  # the compatible brands are not in this head yet
    return None


def describe_unsupported(data: bytes) -> str:
    """The 415 message: names the format we recognised, so the caller knows what to fix."""
    for magic, offset, name in _OTHER_FORMATS:
        if data[offset : offset + len(magic)] == magic:
            return f"This is a {name} file; send a {SUPPORTED} image."
    if data.lstrip()[:1] == b"<":
        return f"This looks like HTML, XML or SVG, not an image; send a {SUPPORTED} image."
    return f"This is not a {SUPPORTED} image."


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the first SOFn frame header, walking the marker segments."""
    index, end = 2, len(data)
    while index < end:
        if data[index] != 0xFF:
            return None
        while index < end and data[index] == 0xFF:
            index += 1  # fill bytes
        if index >= end:
            return None
        marker = data[index]
        index += 1
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:
            continue  # standalone markers carry no length
        if marker in (0xD9, 0xDA):
            return None  # end of image or start of scan before any frame header
        if index + 2 > end:
            return None
        length = int.from_bytes(data[index : index + 2], "big")
        if length < 2:
            return None
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if index + 7 > end:
                return None
            height = int.from_bytes(data[index + 3 : index + 5], "big")
            width = int.from_bytes(data[index + 5 : index + 7], "big")
            return width, height
        index += length
    return None


def _png_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width = int.from_bytes(data[26:28], "little") & 0x3FFF
        height = int.from_bytes(data[28:30], "little") & 0x3FFF
        return width, height
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    return None


def _heif_size(data: bytes) -> tuple[int, int] | None:
    """The largest width and height any picture in a HEIC/AVIF declares (``heif_header``)."""
    try:
        return heif_header.declared_size(data)
    except heif_header.CorruptHeader:
        return None


_HEADER_SIZE = {"jpeg": _jpeg_size, "png": _png_size, "webp": _webp_size,
                "heic": _heif_size, "avif": _heif_size}


def _check_dimensions(width: int, height: int, param: str) -> None:
    max_pixels: int = settings.MAX_IMAGE_PIXELS
    if Image.MAX_IMAGE_PIXELS:
        # Whatever would make Pillow warn about a decompression bomb is refused here,
        # before Pillow gets the chance: its warning is an error for us.
        max_pixels = min(max_pixels, Image.MAX_IMAGE_PIXELS)
    max_side: int = settings.MAX_IMAGE_SIDE
    if width > max_side or height > max_side or width * height > max_pixels:
        raise ApiError(
            "image_too_large",
            f"The image is {width} x {height} pixels; the limit is {max_pixels:,} pixels "
            f"and {max_side:,} px per side.",
            param=param,
        )


# 16-bit value -> 8-bit value, rescaling the full range (65535 -> 255, 32768 -> 128).
_SIXTEEN_TO_EIGHT = ((np.arange(65536, dtype=np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
# Rows converted at a time: bounds the temporary arrays to a few MB at any width.
_STRIP_ROWS = 256


def _scale_to_8_bit(image: Image.Image) -> Image.Image:
    """16-bit grey to 8-bit by rescaling the full range, a strip of rows at a time.

    Pillow's own ``convert("L")`` clips instead (anything above 255 becomes white), which
    would turn almost every 16-bit photo into a white sheet. A lookup table applied per
    strip keeps the extra memory to the 8-bit result (1 byte a pixel) plus one strip,
    where whole-image integer arithmetic needed 8 bytes a pixel several times over
    (about 790 MB for a 40 MP scan).
    """
    width, height = image.size
    grey = np.empty((height, width), np.uint8)
    key = image.info.get("transparency")
    keyed = isinstance(key, int)  # a tRNS colour key names one 16-bit grey value
    alpha = np.empty((height, width), np.uint8) if keyed else None
    for top in range(0, height, _STRIP_ROWS):
        bottom = min(height, top + _STRIP_ROWS)
        values = np.asarray(image.crop((0, top, width, bottom)))
        if values.dtype != np.uint16:  # mode "I" (32-bit) or "F": clip into 16 bits first
            values = np.clip(values, 0, 65535).astype(np.uint16)
        grey[top:bottom] = _SIXTEEN_TO_EIGHT[values]
        if alpha is not None:
            alpha[top:bottom] = np.where(values == key, 0, 255)
    result = Image.fromarray(grey)
    if alpha is not None:
        result = Image.merge("LA", (result, Image.fromarray(alpha)))
    return result


def _detached(image: Image.Image) -> Image.Image:
    """The same pixels in a plain Image, without the decoder object that made them.

    A decoded file keeps its decoder's buffers alive (WebP holds the whole frame twice
    more, for a 40 MP input about 320 MB) for as long as the object lives; ``copy()``
    would add a third copy of the pixels. A new Image over the same pixel store costs
    nothing and lets the decoder go.
    """
    return image._new(image.im)


def _to_srgb(image: Image.Image, icc: bytes | None) -> Image.Image:
    """Colour-convert to sRGB through the embedded profile; no profile means sRGB.

    A profile that is broken or does not match the pixel layout is ignored, as browsers
    do, rather than refusing a picture that displays fine everywhere else.
    """
    if icc:
        try:
            profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            space = profile.profile.xcolor_space.strip()
            if _MODE_FOR_COLOR_SPACE.get(space) == image.mode:
                converted = ImageCms.profileToProfile(
                    image, profile, _SRGB,
                    renderingIntent=ImageCms.Intent.PERCEPTUAL, outputMode="RGB",
                )
                if converted is not None:
                    return converted
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            pass
    return image if image.mode == "RGB" else image.convert("RGB")


def _normalise(image: Image.Image) -> tuple[Image.Image, bool]:
    """Every decoded mode to 8-bit sRGB RGB, in one place. Returns (image, had_alpha).

    Alpha is composited onto white rather than dropped or kept: the colour under a
    transparent pixel is undefined (often black or leftovers from editing), so dropping
    alpha would show garbage, and the pipeline takes RGB and finds the subject itself.
    White is the studio convention for cut-out product shots, which is what transparent
    inputs nearly always are, and a plain white surround is the easiest background for
    matting to separate. Fully opaque pixels are untouched, so the exact-subject promise
    holds for them bit for bit; ``had_alpha`` tells the caller that this happened.
    """
    icc = image.info.get("icc_profile")
    if image.mode in _HIGH_BIT_DEPTH_MODES:
        image = _scale_to_8_bit(image)
    if image.mode == "1":
        image = image.convert("L")
    if image.mode in ("P", "PA") or (
        "transparency" in image.info and image.mode in ("L", "RGB")
    ):
        has_key = "transparency" in image.info or image.mode == "PA"
        image = image.convert("RGBA" if has_key else "RGB")

    alpha: Image.Image | None = None
    if image.mode in ("RGBA", "LA", "RGBa", "La"):
        alpha = image.getchannel("A")
        image = image.convert("RGB" if image.mode.startswith("RGB") else "L")
    elif image.mode not in ("RGB", "L", "CMYK"):
        image = image.convert("RGB")

    image = _to_srgb(image, icc)

    had_alpha = alpha is not None and alpha.getextrema()[0] < 255
    if had_alpha:
        white = Image.new("RGB", image.size, (255, 255, 255))
        white.paste(image, mask=alpha)
        image = white
    return image, had_alpha


def _apply_orientation(image: Image.Image) -> None:
    """Applies EXIF orientation in place; a broken EXIF block is ignored, not fatal."""
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except _DECODE_ERRORS + (KeyError, TypeError):
        pass


def load_image(data: bytes, *, param: str = "image_url") -> InputImage:
    """Checks and decodes untrusted image bytes; raises ApiError naming ``param``.

    415 ``unsupported_image`` unless the bytes are JPEG, PNG, WebP, HEIC or AVIF; 413
    ``image_too_large`` from the header alone; 422 ``invalid_image`` when decoding fails.
    Animations contribute their first frame.
    """
    if not data:
        raise ApiError("invalid_image", "The image is empty (0 bytes).", param=param)
    source_format = sniff_format(data)
    if source_format is None:
        raise ApiError("unsupported_image", describe_unsupported(data), param=param)

    size = _HEADER_SIZE[source_format](data)
    if size is None or 0 in size:
        raise ApiError(
            "invalid_image",
            f"The {source_format.upper()} header is truncated or corrupt.",
            param=param,
        )
    _check_dimensions(*size, param)
    # Entropy-coded data stuffs every 0xFF with 0x00, so this pair only occurs as a
    # start-of-scan marker (or inside metadata, which can only over-count).
    if source_format == "jpeg" and data.count(b"\xff\xda") > MAX_JPEG_SCANS:
        raise ApiError(
            "invalid_image",
            f"The JPEG has more than {MAX_JPEG_SCANS} progressive scans.",
            param=param,
        )

    try:
        image = Image.open(io.BytesIO(data), formats=[_PILLOW_FORMAT[source_format]])
        # The header parser and Pillow must agree; if not, Pillow's size is the truth.
        _check_dimensions(image.width, image.height, param)
        image.load()  # the first frame of an animation
    except Image.DecompressionBombError:
        raise ApiError(
            "image_too_large", "The image has too many pixels to decode safely.", param=param
        ) from None
    except _DECODE_ERRORS as exc:
        raise ApiError(
            "invalid_image",
            f"The {source_format.upper()} image is truncated or corrupt and cannot be decoded.",
            param=param,
        ) from exc

    _apply_orientation(image)
    normalised, had_alpha = _normalise(image)
    if normalised is image:
        normalised = _detached(image)  # never hand out the decoder's object with its file
    del image  # the decoded original (16-bit, palette, CMYK...) is freed before encoding
    normalised.info = {}  # drops EXIF, ICC, text chunks, transparency keys
    return InputImage(
        image=normalised,
        width=normalised.width,
        height=normalised.height,
        source_format=source_format,
        had_alpha=had_alpha,
    )


def encode_png(image: Image.Image) -> bytes:
    """Lossless PNG without metadata, for handing the input to the GPU worker.

    Compression level 1: the file only crosses our own storage, where the seconds
    spent on level 9 buy little.
    """
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1, icc_profile=None, transparency=None)
    return buffer.getvalue()
