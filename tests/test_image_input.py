"""Image checks: the formats we take, sizes refused from the header, one normalised RGB.

HEIC and AVIF inputs have their own file, test_phone_photos.py.

Every image here is generated in the test with Pillow and numpy, or crafted byte by byte
where Pillow would refuse to write it (bomb headers, 16-bit RGB, a non-sRGB profile).
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from django.test import override_settings
from PIL import Image

from imaging import image_input
from imaging.image_input import InputImage, encode_png, load_image, sniff_format
from platform_site.api_errors import ApiError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def refusal(data: bytes, **kwargs) -> ApiError:
    with pytest.raises(ApiError) as info:
        load_image(data, **kwargs)
    return info.value


def pixels(result: InputImage) -> np.ndarray:
    return np.asarray(result.image).astype(int)


def noise(width: int = 64, height: int = 48, mode: str = "RGB") -> Image.Image:
    channels = len(mode)
    values = np.random.default_rng(7).integers(0, 256, (height, width, channels), dtype=np.uint8)
    return Image.fromarray(values if channels > 1 else values[:, :, 0], mode=mode)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def crafted_png(width: int, height: int, *, bit_depth: int = 8, colour_type: int = 2,
                rows: bytes = b"", extra: bytes = b"") -> bytes:
    """A PNG written by hand: IHDR as given, ``rows`` (filter bytes included) as IDAT."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (PNG_SIGNATURE + png_chunk(b"IHDR", header) + extra
            + png_chunk(b"IDAT", zlib.compress(rows)) + png_chunk(b"IEND", b""))


@pytest.fixture
def pillow_open_calls(monkeypatch) -> list[dict]:
    """Records every Image.open call load_image makes, with its keyword arguments."""
    calls: list[dict] = []
    real_open = Image.open

    def spy(fp, *args, **kwargs):
        calls.append(kwargs)
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(image_input.Image, "open", spy)
    return calls


# Sizes, from the header ---------------------------------------------------------------

BOMB_HEADERS = {
    "png-50000x50000": crafted_png(50_000, 50_000, rows=b"\0" * 64),
    "jpeg-65500x65500": (b"\xff\xd8" + b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
                         + b"\xff\xc0\x00\x11\x08\xff\xdc\xff\xdc\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01"
                         + b"\xff\xd9"),
    "webp-vp8x-16384x16384": (b"RIFF\x00\x00\x00\x00WEBPVP8X\x0a\x00\x00\x00\x00\x00\x00\x00"
                              + (16383).to_bytes(3, "little") * 2),
    "webp-vp8l-16384x16384": (b"RIFF\x00\x00\x00\x00WEBPVP8L\x00\x00\x00\x00\x2f"
                              + (16383 | (16383 << 14)).to_bytes(4, "little")),
    "webp-vp8-16383x16383": (b"RIFF\x00\x00\x00\x00WEBPVP8 \x00\x00\x00\x00\x00\x00\x00\x9d\x01\x2a"
                             + (16383).to_bytes(2, "little") * 2),
}


@pytest.mark.parametrize("name", list(BOMB_HEADERS))
def test_a_bomb_header_is_refused_before_pillow_sees_it(name, pillow_open_calls):
    error = refusal(BOMB_HEADERS[name])
    assert error.code == "image_too_large" and error.status == 413
    assert pillow_open_calls == []


def test_one_pixel_over_the_side_limit_is_refused_and_the_limit_itself_is_not():
    assert load_image(encode(Image.new("L", (12_000, 1)), "PNG")).width == 12_000
    assert refusal(encode(Image.new("L", (12_001, 1)), "PNG")).code == "image_too_large"
    assert refusal(encode(Image.new("L", (1, 12_001)), "PNG")).code == "image_too_large"


@override_settings(MAX_IMAGE_PIXELS=10_000)
def test_one_pixel_over_the_pixel_limit_is_refused_and_the_limit_itself_is_not():
    assert load_image(encode(Image.new("RGB", (100, 100)), "PNG")).height == 100
    for fmt in ("PNG", "JPEG", "WEBP"):
        error = refusal(encode(Image.new("RGB", (101, 100)), fmt), param="image_file")
        assert error.code == "image_too_large" and error.param == "image_file"
        assert "101 x 100" in error.message


def test_the_default_limits_allow_a_24_megapixel_header(pillow_open_calls):
    # 6000 x 4000 passes the header check; the truncated body is what fails.
    error = refusal(crafted_png(6000, 4000, rows=b"\0" * 64))
    assert error.code == "invalid_image"
    assert len(pillow_open_calls) == 1


def test_pillows_bomb_warning_is_an_error(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        error = refusal(encode(Image.new("RGB", (40, 40)), "PNG"))
    assert error.code == "image_too_large"
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_a_progressive_jpeg_loads_but_one_with_too_many_scans_is_refused(pillow_open_calls):
    progressive = encode(noise(), "JPEG", progressive=True, quality=90)
    assert 1 < progressive.count(b"\xff\xda") <= image_input.MAX_JPEG_SCANS
    assert load_image(progressive).source_format == "jpeg"
    # 101 start-of-scan markers; real ones cost a full decoding pass each.
    payload = b"\xff\xda" * (image_input.MAX_JPEG_SCANS + 1)
    comment = b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload
    error = refusal(progressive[:2] + comment + progressive[2:])
    assert error.code == "invalid_image" and "scans" in error.message
    assert len(pillow_open_calls) == 1  # only the good one reached Pillow


# Formats ------------------------------------------------------------------------------

FOREIGN = {
    "gif": lambda: encode(noise(8, 8, "L"), "GIF"),
    "bmp": lambda: encode(noise(8, 8), "BMP"),
    "tiff": lambda: encode(noise(8, 8), "TIFF"),
    "ico": lambda: encode(noise(16, 16), "ICO"),
    "eps": lambda: b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n",
    "dos-eps": lambda: b"\xc5\xd0\xd3\xc6" + b"\0" * 40,
    "pdf": lambda: b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n",
    "psd": lambda: b"8BPS\x00\x01" + b"\0" * 6 + b"\x00\x03\x00\x00\x00\x08\x00\x00\x00\x08\x00\x08\x00\x03",
    "svg": lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
    "html": lambda: b"  <!doctype html><title>not an image</title>",
    "riff-avi": lambda: b"RIFF\x10\x00\x00\x00AVI LIST" + b"\0" * 20,
    "random": lambda: b"\x13" + np.random.default_rng(1).bytes(4095),
    "text": lambda: b"hello",
}


@pytest.mark.parametrize("name", list(FOREIGN))
def test_anything_but_jpeg_png_webp_heic_and_avif_is_unsupported_and_never_reaches_pillow(name, pillow_open_calls):
    error = refusal(FOREIGN[name](), param="image_file")
    assert error.code == "unsupported_image" and error.status == 415
    assert error.param == "image_file"
    assert pillow_open_calls == []


def test_the_refusal_names_the_format_it_saw():
    assert "GIF" in refusal(FOREIGN["gif"]()).message
    assert "PSD" in refusal(FOREIGN["psd"]()).message


def test_an_empty_file_is_invalid():
    error = refusal(b"")
    assert error.code == "invalid_image" and error.status == 422


@pytest.mark.parametrize(("fmt", "name"), [("JPEG", "jpeg"), ("PNG", "png"), ("WEBP", "webp")])
def test_pillow_is_only_allowed_the_format_the_bytes_announced(fmt, name, pillow_open_calls):
    result = load_image(encode(noise(8, 8), fmt))
    assert result.source_format == name
    assert pillow_open_calls == [{"formats": [fmt]}]


def test_the_format_comes_from_the_bytes():
    assert sniff_format(encode(noise(4, 4), "PNG")[:12]) == "png"
    assert sniff_format(encode(noise(4, 4), "JPEG")[:12]) == "jpeg"
    assert sniff_format(encode(noise(4, 4), "WEBP")[:12]) == "webp"
    assert sniff_format(b"GIF89a......") is None
    assert sniff_format(b"RIFF\0\0\0\0AVI ") is None


# Truncated and corrupt ----------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
@pytest.mark.parametrize("keep", [3, 20, 0.5, 0.9], ids=["magic", "header", "half", "most"])
def test_a_truncated_file_is_invalid(fmt, keep):
    whole = encode(noise(), fmt, **({"quality": 90} if fmt != "PNG" else {}))
    cut = whole[: keep if isinstance(keep, int) else int(len(whole) * keep)]
    error = refusal(cut)
    assert error.code == "invalid_image" and error.status == 422


def test_a_png_with_corrupt_compressed_data_is_invalid():
    header = struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0)
    data = (PNG_SIGNATURE + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", b"\x78\x9c garbage!")
            + png_chunk(b"IEND", b""))
    assert refusal(data).code == "invalid_image"


# Normalisation --------------------------------------------------------------------------


def test_every_result_is_8_bit_rgb_without_metadata():
    exif = Image.Exif()
    exif[0x010F] = "Camera maker"
    source = encode(noise(), "PNG", exif=exif.tobytes(), icc_profile=_swapped_primaries_profile())
    result = load_image(source)
    assert result.image.mode == "RGB"
    assert result.image.info == {}
    assert (result.width, result.height) == result.image.size == (64, 48)


def test_a_cmyk_jpeg_becomes_rgb():
    cyan_free = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # full magenta + yellow: red
    result = load_image(encode(cyan_free, "JPEG", quality=95))
    assert result.source_format == "jpeg"
    assert np.abs(pixels(result)[8, 8] - [255, 0, 0]).max() <= 4


def test_a_16_bit_grey_png_is_scaled_not_clipped():
    values = np.array([[0, 32768, 65535, 25700, 257]], dtype=np.uint16)
    result = load_image(encode(Image.fromarray(values), "PNG"))
    assert pixels(result)[0, :, 0].tolist() == [0, 128, 255, 100, 1]
    assert (pixels(result)[..., 0] == pixels(result)[..., 2]).all()


def test_a_16_bit_rgb_png_keeps_its_full_range():
    samples = [(65535, 32768, 0), (2570, 0, 65535)]
    rows = b"\0" + b"".join(struct.pack(">HHH", *sample) for sample in samples)
    result = load_image(crafted_png(2, 1, bit_depth=16, colour_type=2, rows=rows))
    assert pixels(result)[0].tolist() == [[255, 128, 0], [10, 0, 255]]


def test_a_16_bit_grey_colour_key_is_transparency():
    rows = b"\0" + struct.pack(">HH", 65535, 1234)
    trns = png_chunk(b"tRNS", struct.pack(">H", 1234))
    result = load_image(crafted_png(2, 1, bit_depth=16, colour_type=0, rows=rows, extra=trns))
    assert result.had_alpha
    assert pixels(result)[0].tolist() == [[255, 255, 255], [255, 255, 255]]


def test_a_one_bit_png_becomes_black_and_white():
    image = Image.new("1", (2, 1))
    image.putpixel((1, 0), 1)
    assert pixels(load_image(encode(image, "PNG")))[0].tolist() == [[0, 0, 0], [255, 255, 255]]


def test_a_grey_image_becomes_grey_rgb():
    grey = Image.fromarray(np.array([[0, 77, 255]], dtype=np.uint8), mode="L")
    result = load_image(encode(grey, "PNG"))
    assert pixels(result)[0].tolist() == [[0, 0, 0], [77, 77, 77], [255, 255, 255]]
    assert not result.had_alpha


def test_a_palette_image_with_a_transparent_entry_is_composited_on_white():
    image = Image.new("P", (2, 1))
    image.putpalette([200, 10, 20, 0, 255, 0] + [0, 0, 0] * 254)
    image.putpixel((1, 0), 1)
    result = load_image(encode(image, "PNG", transparency=1))
    assert result.had_alpha
    assert pixels(result)[0].tolist() == [[200, 10, 20], [255, 255, 255]]


def test_a_palette_image_without_transparency_keeps_its_colours():
    image = Image.new("P", (2, 1))
    image.putpalette([200, 10, 20, 1, 2, 3] + [0, 0, 0] * 254)
    image.putpixel((1, 0), 1)
    result = load_image(encode(image, "PNG"))
    assert not result.had_alpha
    assert pixels(result)[0].tolist() == [[200, 10, 20], [1, 2, 3]]


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_translucent_pixels_go_onto_white_and_opaque_ones_stay_exact(fmt):
    rgba = np.array([[[10, 20, 30, 255], [10, 20, 30, 0], [0, 0, 0, 128], [91, 92, 93, 255]]],
                    dtype=np.uint8)
    options = {"lossless": True, "exact": True} if fmt == "WEBP" else {}
    result = load_image(encode(Image.fromarray(rgba, "RGBA"), fmt, **options))
    assert result.had_alpha
    out = pixels(result)[0]
    assert out[0].tolist() == [10, 20, 30] and out[3].tolist() == [91, 92, 93]
    assert out[1].tolist() == [255, 255, 255]
    assert np.abs(out[2] - 127).max() <= 1  # black at half opacity over white


def test_grey_with_alpha_is_composited_too():
    la = Image.fromarray(np.array([[[50, 255], [50, 0]]], dtype=np.uint8), "LA")
    result = load_image(encode(la, "PNG"))
    assert result.had_alpha
    assert pixels(result)[0].tolist() == [[50, 50, 50], [255, 255, 255]]


def test_an_alpha_channel_that_is_fully_opaque_does_not_count_as_alpha():
    opaque = Image.new("RGBA", (3, 3), (1, 2, 3, 255))
    result = load_image(encode(opaque, "PNG"))
    assert not result.had_alpha
    assert pixels(result)[1, 1].tolist() == [1, 2, 3]


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _swapped_primaries_profile() -> bytes:
    """A matrix/TRC RGB ICC profile whose red and blue primaries are swapped.

    Pure channels make the conversion unmistakable: (255, 0, 0) in this space is sRGB
    blue. Pillow can only build Lab, XYZ and sRGB profiles, so this one is assembled
    from the ICC v2 layout directly.
    """
    srgb_red, srgb_green, srgb_blue = (0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141)

    def xyz(values: tuple[float, float, float]) -> bytes:
        return b"XYZ " + b"\0" * 4 + b"".join(_s15(v) for v in values)

    curve = b"curv" + b"\0" * 4 + struct.pack(">IH", 1, round(2.2 * 256)) + b"\0\0"
    name = b"swapped primaries\0"
    desc = b"desc" + b"\0" * 4 + struct.pack(">I", len(name)) + name + b"\0" * 8 + b"\0" * 3 + b"\0" * 67
    tags = [(b"desc", desc), (b"wtpt", xyz((0.9642, 1.0, 0.8249))),
            (b"rXYZ", xyz(srgb_blue)), (b"gXYZ", xyz(srgb_green)), (b"bXYZ", xyz(srgb_red)),
            (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve),
            (b"cprt", b"text" + b"\0" * 4 + b"no copyright\0")]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for signature, payload in tags:
        payload += b"\0" * (-len(payload) % 4)
        table += signature + struct.pack(">II", offset + len(data), len(payload))
        data += payload
    size = offset + len(data)
    header = (struct.pack(">I", size) + b"lcms" + bytes([2, 0x10, 0, 0]) + b"mntr" + b"RGB " + b"XYZ "
              + b"\0" * 12 + b"acsp" + b"\0" * 24 + b"\0" * 4
              + _s15(0.9642) + _s15(1.0) + _s15(0.8249) + b"\0" * 48)
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_colours_are_converted_to_srgb_through_the_embedded_profile(fmt):
    stripes = Image.fromarray(
        np.repeat(np.array([[[255, 0, 0], [0, 255, 0], [255, 255, 255]]], dtype=np.uint8), 16, axis=1)
        .repeat(16, axis=0)
    )
    options = {"quality": 100} if fmt == "JPEG" else {"lossless": True} if fmt == "WEBP" else {}
    result = load_image(encode(stripes, fmt, icc_profile=_swapped_primaries_profile(), **options))
    out = pixels(result)
    assert np.abs(out[8, 8] - [0, 0, 255]).max() <= 4  # file red is profile blue
    assert np.abs(out[8, 24] - [0, 255, 0]).max() <= 4
    assert np.abs(out[8, 40] - [255, 255, 255]).max() <= 4


def test_a_broken_profile_is_ignored_like_browsers_do():
    image = Image.new("RGB", (4, 4), (255, 0, 0))
    result = load_image(encode(image, "PNG", icc_profile=b"definitely not ICC"))
    assert pixels(result)[0, 0].tolist() == [255, 0, 0]


# Orientation -------------------------------------------------------------------------

# What a viewer must show for each EXIF orientation, from the TIFF/EXIF definitions of
# where the stored 0th row and 0th column belong, written independently of Pillow.
DISPLAYED = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1, :],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, k=-1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, k=1),
}


def _with_orientation(image: Image.Image, fmt: str, orientation: int, **options) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, fmt, exif=exif.tobytes(), **options)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_exif_orientation_is_applied_pixel_for_pixel(fmt, orientation):
    stored = np.arange(3 * 2 * 3, dtype=np.uint8).reshape(2, 3, 3) * 12  # 3 wide, 2 high
    options = {"lossless": True, "exact": True} if fmt == "WEBP" else {}
    result = load_image(_with_orientation(Image.fromarray(stored), fmt, orientation, **options))
    expected = DISPLAYED[orientation](stored)
    assert pixels(result).tolist() == expected.tolist()
    assert (result.width, result.height) == (expected.shape[1], expected.shape[0])


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied_to_jpeg(orientation):
    stored = np.zeros((16, 32, 3), dtype=np.uint8)
    stored[:, :16] = (255, 0, 0)  # left half red, right half blue
    stored[:, 16:] = (0, 0, 255)
    result = load_image(_with_orientation(Image.fromarray(stored), "JPEG", orientation, quality=95))
    expected = DISPLAYED[orientation](stored).astype(int)
    out = pixels(result)
    assert out.shape == expected.shape
    assert np.abs(out - expected).mean() < 6


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_a_broken_exif_block_is_ignored():
    data = encode(noise(8, 8), "PNG", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff garbage")
    assert load_image(data).image.size == (8, 8)


# Animations --------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_an_animation_contributes_its_first_frame(fmt):
    frames = [Image.new("RGB", (10, 6), colour) for colour in ((250, 0, 0), (0, 250, 0), (0, 0, 250))]
    options = {"lossless": True} if fmt == "WEBP" else {}
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **options)
    with Image.open(io.BytesIO(data)) as check:
        assert check.n_frames == 3
    result = load_image(data)
    assert (result.width, result.height) == (10, 6)
    assert np.abs(pixels(result)[3, 5] - [250, 0, 0]).max() <= 2
    assert not result.had_alpha


# The hand-off ------------------------------------------------------------------------


def _chunk_types(png: bytes) -> list[bytes]:
    types, offset = [], 8
    while offset < len(png):
        length = struct.unpack(">I", png[offset : offset + 4])[0]
        types.append(png[offset + 4 : offset + 8])
        offset += 12 + length
    return types


def test_encode_png_is_lossless_and_carries_no_metadata():
    source = encode(noise(), "PNG", icc_profile=_swapped_primaries_profile(),
                    exif=Image.Exif().tobytes())
    loaded = load_image(source)
    png = encode_png(loaded.image)
    assert _chunk_types(png) == [b"IHDR", b"IDAT", b"IEND"]
    with Image.open(io.BytesIO(png)) as again:
        assert np.array_equal(np.asarray(again), np.asarray(loaded.image))


def test_encode_png_drops_metadata_even_from_an_image_that_has_some():
    image = Image.new("RGB", (2, 2))
    image.info["icc_profile"] = _swapped_primaries_profile()
    image.info["transparency"] = (0, 0, 0)
    assert _chunk_types(encode_png(image)) == [b"IHDR", b"IDAT", b"IEND"]
