"""Phone photos: HEIC (the iPhone default) and AVIF in, lossless WebP out.

Every HEIC here is written in the test by pillow-heif (libheif + x265), every AVIF by
Pillow's own AVIF plugin (libavif + aom); both are lossy, so pixels are compared with
a small mean difference. Bombs are real files with their size fields rewritten.
"""

from __future__ import annotations

import io
import struct

import numpy as np
import pillow_heif
import pytest
from django.core.files.storage import default_storage
from django.test import override_settings
from PIL import AvifImagePlugin, Image

from gpu_worker.composite import encode_image
from imaging import image_input  # registers the HEIF plugin that writes the HEICs below
from imaging.image_input import load_image, sniff_format
from imaging.models import Render
from platform_site.api_errors import ApiError
from tests.helpers_render import (  # noqa: F401  (fixtures are found by name)
    allow_loopback_fetches,
    api_client,
    make_user,
    post_render,
    render_env,
    serving,
)
from tests.test_image_input import _swapped_primaries_profile, pillow_open_calls  # noqa: F401  (fixture)

PILLOW_FORMAT = {"heic": "HEIF", "avif": "AVIF"}
PHONE_FORMATS = list(PILLOW_FORMAT)


def photo(width: int = 96, height: int = 64) -> np.ndarray:
    """A smooth, photo-like picture (gradients and a product block): what lossy codecs keep well."""
    x = np.linspace(0.0, 1.0, width)[None, :, None]
    y = np.linspace(0.0, 1.0, height)[:, None, None]
    picture = 40 + 170 * x * np.array([1.0, 0.6, 0.2]) + 40 * y * np.array([0.2, 0.5, 1.0])
    picture = np.broadcast_to(picture, (height, width, 3)).copy()
    picture[height // 4 : 3 * height // 4, width // 3 : 2 * width // 3] = (30, 40, 60)
    return np.clip(picture, 0, 255).astype(np.uint8)


def quadrants(width: int = 96, height: int = 64) -> np.ndarray:
    """Four flat colours, one per corner, so every rotation and mirror looks different."""
    picture = np.empty((height, width, 3), np.uint8)
    picture[: height // 2, : width // 2] = (220, 30, 30)
    picture[: height // 2, width // 2 :] = (30, 200, 30)
    picture[height // 2 :, : width // 2] = (30, 30, 220)
    picture[height // 2 :, width // 2 :] = (240, 240, 240)
    return picture


def encode(pixels: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    mode = "RGBA" if pixels.shape[-1] == 4 else "RGB"
    Image.fromarray(pixels, mode).save(buffer, PILLOW_FORMAT.get(fmt, fmt), quality=90, **options)
    return buffer.getvalue()


def with_orientation(pixels: np.ndarray, fmt: str, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(pixels, fmt, exif=exif.tobytes())


def with_ispe(data: bytes, width: int, height: int) -> bytes:
    """The same file with its first ``ispe`` property declaring another size."""
    at = data.index(b"ispe")
    return data[: at + 8] + struct.pack(">II", width, height) + data[at + 16 :]


def mean_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


def refusal(data: bytes, **kwargs) -> ApiError:
    with pytest.raises(ApiError) as info:
        load_image(data, **kwargs)
    return info.value



@pytest.fixture
def decodes(monkeypatch) -> list[str]:
    """Records every pixel decode of the HEIF and AVIF plugins (their ``load``)."""
    calls: list[str] = []
    for plugin in (pillow_heif.as_plugin._LibHeifImageFile, AvifImagePlugin.AvifImageFile):
        real_load = plugin.load

        def spy(self, _real=real_load):
            calls.append(self.format)
            return _real(self)

        monkeypatch.setattr(plugin, "load", spy)
    return calls


# Through the API ------------------------------------------------------------------------


def stored_input(response) -> Image.Image:
    assert response.status_code == 202, response.content
    render = Render.objects.get(public_id=response.json()["id"])
    with default_storage.open(render.input_key, "rb") as handle:
        picture = Image.open(io.BytesIO(handle.read()))
        picture.load()
    return picture


@pytest.mark.usefixtures("render_env")
@pytest.mark.parametrize("fmt", PHONE_FORMATS)
def test_it_accepts_an_iphone_heic_or_an_avif_upload_and_stores_an_rgb_png_close_to_it(fmt):
    source = photo(97, 65)  # odd sizes: 4:2:0 chroma and the encoders' padding must not show
    response = post_render(api_client(make_user(f"{fmt}@example.com")), image=encode(source, fmt))
    stored = stored_input(response)
    assert stored.format == "PNG" and stored.mode == "RGB" and stored.size == (97, 65)
    assert mean_difference(np.asarray(stored), source) < 3
    assert Render.objects.get(public_id=response.json()["id"]).source_format == fmt


@pytest.mark.usefixtures("render_env")
def test_it_fetches_a_heic_image_url_like_any_other_image(settings):
    source = photo()
    with serving(encode(source, "heic"), content_type="image/heic") as url:
        allow_loopback_fetches(settings, url)
        response = api_client(make_user("url@example.com")).post(
            "/v1/image/replace-background", {"image_url": url, "scene_prompt": "a marble plinth"},
            content_type="application/json")
    assert mean_difference(np.asarray(stored_input(response)), source) < 3


@pytest.mark.usefixtures("render_env")
def test_a_truncated_heic_upload_is_422_invalid_image_and_nothing_is_created():
    data = encode(photo(), "heic")
    response = post_render(api_client(make_user("cut@example.com")), image=data[: len(data) // 2])
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_image"
    assert Render.objects.count() == 0


# Formats ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", PHONE_FORMATS)
def test_the_first_twelve_bytes_are_enough_for_the_fetcher_to_keep_downloading(fmt):
    assert sniff_format(encode(photo(), fmt)[:12]) == fmt


@pytest.mark.parametrize("fmt", PHONE_FORMATS)
def test_pillow_is_only_allowed_the_plugin_the_brands_announced(fmt, pillow_open_calls):
    assert load_image(encode(photo(), fmt)).source_format == fmt
    assert pillow_open_calls == [{"formats": [PILLOW_FORMAT[fmt]]}]


def test_a_heif_with_a_structural_major_brand_is_heic_when_a_hevc_brand_is_compatible():
    heic = encode(photo(), "heic")
    assert heic[8:12] == b"heic"
    relabelled = heic[:8] + b"mif1" + heic[12:]  # compatible brands still list heic
    assert sniff_format(relabelled) == "heic"
    assert load_image(relabelled).image.size == (96, 64)


UNSUPPORTED_FTYP = {
    "heif-without-hevc": b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1miaf",
    "animated-avif": b"\x00\x00\x00\x1cftypavis\x00\x00\x00\x00avismsf1miaf",
    "mp4-video": b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2",
}


@pytest.mark.parametrize("name", list(UNSUPPORTED_FTYP))
def test_other_iso_media_files_stay_unsupported_and_never_reach_pillow(name, pillow_open_calls):
    error = refusal(UNSUPPORTED_FTYP[name] + b"\x00" * 64, param="image_file")
    assert (error.code, error.status, error.param) == ("unsupported_image", 415, "image_file")
    assert pillow_open_calls == []


# Orientation ---------------------------------------------------------------------------

UPRIGHT = {6: lambda a: np.rot90(a, k=-1), 8: lambda a: np.rot90(a, k=1)}


@pytest.mark.parametrize("orientation", [6, 8])
@pytest.mark.parametrize("fmt", [*PHONE_FORMATS, "JPEG"])
def test_a_rotated_photo_ends_up_upright_turned_exactly_once(fmt, orientation):
    stored = quadrants()  # 96 wide, 64 high, as the sensor saw it
    result = load_image(with_orientation(stored, fmt, orientation))
    expected = UPRIGHT[orientation](stored)
    # Not turned: 96 x 64; turned twice (180 degrees): 96 x 64 again; the wrong way: far off.
    assert (result.width, result.height) == (64, 96)
    assert mean_difference(np.asarray(result.image), expected) < 6


def test_an_iphone_style_heic_carries_both_irot_and_exif_orientation_and_turns_once():
    # iPhones write the rotation twice: as the HEIF irot property and in EXIF.
    data = with_orientation(quadrants(), "heic", 6)
    assert b"irot" in data
    with Image.open(io.BytesIO(data), formats=["HEIF"]) as opened:
        # What the EXIF said before pillow-heif reset it to 1 (libheif applies irot).
        assert opened.info["original_orientation"] == 6
    result = load_image(data)
    assert mean_difference(np.asarray(result.image), UPRIGHT[6](quadrants())) < 6


# Sizes, from the header ----------------------------------------------------------------


@pytest.mark.parametrize("fmt", PHONE_FORMATS)
def test_a_huge_declared_size_is_refused_before_pillow_opens_the_file(fmt, pillow_open_calls):
    error = refusal(with_ispe(encode(photo(), fmt), 20_000, 20_000))
    assert (error.code, error.status) == ("image_too_large", 413)
    assert "20000 x 20000" in error.message
    assert pillow_open_calls == []


@override_settings(MAX_IMAGE_PIXELS=10_000)
@pytest.mark.parametrize("fmt", PHONE_FORMATS)
def test_one_row_over_the_pixel_limit_is_refused_and_the_limit_itself_is_not(fmt, pillow_open_calls):
    assert load_image(encode(photo(100, 100), fmt)).height == 100
    error = refusal(encode(photo(100, 102), fmt), param="image_file")
    assert (error.code, error.param) == ("image_too_large", "image_file")
    assert "100 x 102" in error.message
    assert len(pillow_open_calls) == 1  # only the one within the limit was opened


@override_settings(MAX_IMAGE_PIXELS=10_000)
def test_an_avif_hiding_a_larger_frame_behind_a_small_ispe_is_refused_from_its_sequence_header(
        pillow_open_calls, decodes):
    # libavif hands the AV1 stream to the decoder without comparing it with ispe.
    data = with_ispe(encode(photo(300, 200), "avif"), 64, 48)
    error = refusal(data)
    assert error.code == "image_too_large" and "300 x 200" in error.message
    assert pillow_open_calls == [] and decodes == []


def test_a_tiled_heic_as_iphones_write_it_is_sized_by_its_grid_and_loads_whole(pillow_open_calls):
    data = encode(photo(200, 130), "heic", tile_size=64)  # iPhones use 512 x 512 tiles
    assert b"grid" in data
    result = load_image(data)
    assert result.image.size == (200, 130)
    assert mean_difference(np.asarray(result.image), photo(200, 130)) < 3
    with override_settings(MAX_IMAGE_PIXELS=20_000):  # every tile fits, the picture does not
        assert refusal(data).code == "image_too_large"
    assert len(pillow_open_calls) == 1


def test_a_heic_hiding_a_larger_stream_behind_a_small_ispe_is_invalid():
    # libheif compares the HEVC stream with ispe before decoding and refuses.
    error = refusal(with_ispe(encode(photo(300, 200), "heic"), 64, 48))
    assert error.code == "invalid_image" and error.status == 422


@pytest.mark.parametrize("fmt", PHONE_FORMATS)
def test_pillows_lazily_read_size_is_checked_again_before_anything_is_decoded(
        fmt, monkeypatch, decodes):
    # As if a file had fooled heif_header: the size Pillow reads is the second line.
    monkeypatch.setitem(image_input._HEADER_SIZE, fmt, lambda data: (1, 1))
    with override_settings(MAX_IMAGE_PIXELS=10_000):
        error = refusal(encode(photo(200, 100), fmt))
    assert error.code == "image_too_large" and "200 x 100" in error.message
    assert decodes == []


# Truncated and corrupt -----------------------------------------------------------------


@pytest.mark.parametrize("fmt", PHONE_FORMATS)
@pytest.mark.parametrize("keep", [12, 40, 0.3, 0.6, 0.98], ids=["ftyp", "meta", "third", "most", "nearly"])
def test_a_truncated_heic_or_avif_is_invalid(fmt, keep):
    whole = encode(photo(), fmt)
    error = refusal(whole[: keep if isinstance(keep, int) else int(len(whole) * keep)])
    assert (error.code, error.status) == ("invalid_image", 422)


@pytest.mark.parametrize("fmt", PHONE_FORMATS)
def test_a_heic_or_avif_with_garbage_for_its_item_table_is_invalid(fmt):
    whole = encode(photo(), fmt)
    at = whole.index(b"iinf")
    error = refusal(whole[:at] + b"\xff" * 32 + whole[at + 32 :])
    assert (error.code, error.status) == ("invalid_image", 422)


# Colour ----------------------------------------------------------------------------------


def test_a_10_bit_heic_becomes_8_bit_keeping_its_full_range():
    ramp = np.linspace(0, 65535, 64 * 48 * 3).reshape(48, 64, 3).astype(np.uint16)
    buffer = io.BytesIO()
    pillow_heif.from_bytes("RGB;16", (64, 48), ramp.tobytes()).save(buffer, quality=95)
    assert pillow_heif.open_heif(buffer.getvalue()).info["bit_depth"] == 10
    result = load_image(buffer.getvalue())
    assert result.image.mode == "RGB"
    assert mean_difference(np.asarray(result.image), ramp // 257) < 2
    assert np.asarray(result.image).max() >= 250


@pytest.mark.parametrize("fmt", PHONE_FORMATS)
def test_an_embedded_icc_profile_is_converted_to_srgb(fmt):
    red = np.zeros((32, 32, 3), np.uint8)
    red[...] = (255, 0, 0)
    result = load_image(encode(red, fmt, icc_profile=_swapped_primaries_profile()))
    assert np.abs(np.asarray(result.image)[16, 16].astype(int) - [0, 0, 255]).max() <= 8  # profile blue
    assert result.image.info == {}


@pytest.mark.parametrize("fmt", PHONE_FORMATS)
def test_transparent_pixels_of_a_heic_or_avif_go_onto_white(fmt):
    rgba = np.dstack([photo(), np.full((64, 96), 255, np.uint8)])
    rgba[:, :32, 3] = 0  # the left third fully transparent
    result = load_image(encode(rgba, fmt))
    out = np.asarray(result.image)
    assert result.had_alpha
    assert mean_difference(out[:, :28], np.full((64, 28, 3), 255)) < 3
    assert mean_difference(out[:, 36:], photo()[:, 36:]) < 3


# Lossless WebP out ----------------------------------------------------------------------


@pytest.mark.parametrize("size", [(1, 1), (37, 53), (2, 999), (480, 640)])
def test_webp_output_is_lossless_bit_for_bit_and_carries_no_metadata(size):
    image = np.random.default_rng(3).integers(0, 256, (*size, 3), dtype=np.uint8)
    data, content_type = encode_image(image, "webp")
    assert content_type == "image/webp"
    with Image.open(io.BytesIO(data)) as decoded:
        assert decoded.format == "WEBP" and decoded.mode == "RGB"
        assert np.array_equal(np.asarray(decoded), image)
        assert not decoded.getexif()
        assert "icc_profile" not in decoded.info and "xmp" not in decoded.info
    assert data[12:16] == b"VP8L"  # the lossless bitstream, not VP8


def test_the_webp_output_of_a_photo_is_smaller_than_the_png():
    image = photo(640, 480)
    assert len(encode_image(image, "webp")[0]) < len(encode_image(image, "png")[0])
