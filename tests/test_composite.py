"""The exact composite, each output format's contract, and the pipeline around them."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from gpu_worker import synthetic
from gpu_worker.composite import (compose, decode_input, encode_image, encode_matte)
from gpu_worker.errors import RenderError
from gpu_worker.matting.classical import ClassicalAlphaEstimator
from gpu_worker.matting.engine import MattingPipeline
from gpu_worker.pipeline import ReplaceBackgroundPipeline
from gpu_worker.stages import PlainSceneGenerator, Scene, SceneRequest


def random_inputs(height: int, width: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    alpha = rng.choice([0.0, 1.0, 0.25, 0.5, 0.8], size=(height, width)).astype(np.float32)
    foreground = rng.uniform(0, 1, (height, width, 3)).astype(np.float32)
    background = rng.uniform(0, 1, (height, width, 3)).astype(np.float32)
    return image, alpha, foreground, background


@settings(max_examples=25, deadline=None)
@given(height=st.integers(1, 41), width=st.integers(1, 41), seed=st.integers(0, 2**16))
def test_opaque_pixels_are_the_source_bit_for_bit_at_any_size(height, width, seed):
    image, alpha, foreground, background = random_inputs(height, width, seed)
    out = compose(image, alpha, foreground, background)
    opaque = alpha >= 1
    assert out.shape == (height, width, 3) and out.dtype == np.uint8
    assert np.array_equal(out[opaque], image[opaque])


def test_transparent_pixels_are_the_background_and_the_rest_follow_the_equation():
    image, alpha, foreground, background = random_inputs(37, 53)
    out = compose(image, alpha, foreground, background)
    clear = alpha == 0
    expected_clear = np.clip(np.round(background * 255), 0, 255).astype(np.uint8)
    assert np.array_equal(out[clear], expected_clear[clear])
    mixed = (alpha > 0) & (alpha < 1)
    a = alpha[..., None]
    ideal = (a * foreground + (1 - a) * background) * 255
    assert np.abs(out[mixed].astype(float) - ideal[mixed]).max() <= 0.51


def test_the_shadow_darkens_only_what_shows_of_the_background():
    image, alpha, foreground, background = random_inputs(21, 33)
    shadow = np.full((21, 33), 0.5, np.float32)
    out = compose(image, alpha, foreground, background, shadow)
    clear = alpha == 0
    expected = np.clip(np.round(background * 0.5 * 255), 0, 255).astype(np.uint8)
    assert np.array_equal(out[clear], expected[clear])
    assert np.array_equal(out[alpha >= 1], image[alpha >= 1])


def test_compose_refuses_arrays_of_the_wrong_size():
    image, alpha, foreground, background = random_inputs(10, 12)
    with pytest.raises(ValueError):
        compose(image, alpha, foreground, background[:9])
    with pytest.raises(ValueError):
        compose(image, alpha, foreground, background, np.ones((12, 10), np.float32))


@pytest.mark.parametrize("size", [(1, 1), (37, 53), (53, 37), (2, 999)])
def test_png_output_is_lossless_srgb_and_carries_no_metadata(size):
    image = np.random.default_rng(1).integers(0, 256, (*size, 3), dtype=np.uint8)
    data, content_type = encode_image(image, "png")
    assert content_type == "image/png"
    with Image.open(io.BytesIO(data)) as decoded:
        assert decoded.format == "PNG" and decoded.mode == "RGB"
        assert np.array_equal(np.asarray(decoded), image)
        assert not decoded.getexif() and "exif" not in decoded.info
        assert not getattr(decoded, "text", {})
    assert b"sRGB" in data[:64]  # declared sRGB, right after the header
    assert b"tEXt" not in data and b"iTXt" not in data and b"eXIf" not in data


# WebP is lossless: its exactness is tested in test_phone_photos.
@pytest.mark.parametrize("output_format,content_type", [("jpeg", "image/jpeg")])
def test_lossy_outputs_keep_odd_sizes_and_carry_no_metadata(output_format, content_type):
    case = synthetic.make_case("product", "white", width=101, height=77, supersample=2)
    data, returned_type = encode_image(case.image, output_format)
    assert returned_type == content_type
    with Image.open(io.BytesIO(data)) as decoded:
        assert decoded.format == output_format.upper()
        assert decoded.size == (101, 77) and decoded.mode == "RGB"
        assert not decoded.getexif()
        assert "icc_profile" not in decoded.info and "xmp" not in decoded.info
        # Lossy, but close: a sanity bound on the encoder settings.
        assert np.abs(np.asarray(decoded).astype(int) - case.image).mean() < 3


def test_the_matte_is_an_8_bit_greyscale_png_of_the_alpha():
    alpha = np.linspace(0, 1, 7 * 9, dtype=np.float32).reshape(7, 9)
    with Image.open(io.BytesIO(encode_matte(alpha))) as decoded:
        assert decoded.format == "PNG" and decoded.mode == "L" and decoded.size == (9, 7)
        assert np.array_equal(np.asarray(decoded), np.round(alpha * 255).astype(np.uint8))


def test_an_unknown_output_format_is_a_bug_not_a_silent_png():
    with pytest.raises(ValueError):
        encode_image(np.zeros((2, 2, 3), np.uint8), "gif")


def test_inputs_that_are_not_rgb_images_are_refused_as_invalid_image():
    with pytest.raises(RenderError) as caught:
        decode_input(b"definitely not an image")
    assert caught.value.code == "invalid_image"
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, "TIFF")
    with pytest.raises(RenderError) as caught:
        decode_input(buffer.getvalue())
    assert caught.value.code == "invalid_image"
    buffer = io.BytesIO()
    Image.new("I;16", (4, 4)).save(buffer, "PNG")
    with pytest.raises(RenderError):
        decode_input(buffer.getvalue())


def test_greyscale_inputs_are_read_as_rgb():
    buffer = io.BytesIO()
    Image.new("L", (5, 3), 200).save(buffer, "PNG")
    array = decode_input(buffer.getvalue())
    assert array.shape == (3, 5, 3) and array.dtype == np.uint8 and (array == 200).all()


class PaintEverything:
    """A scene generator that paints over the subject too, as diffusion models do."""

    name = "paint-everything"

    def __call__(self, request: SceneRequest) -> Scene:
        height, width = request.image.shape[:2]
        background = np.zeros((height, width, 3), np.float32)
        background[..., 1] = 1.0  # pure green, everywhere, subject included
        return Scene(background=background, shadow=np.full((height, width), 0.8, np.float32),
                     facts={"scene_generated": True, "light_direction": "left", "prompt": request.prompt,
                            "light": {"direction": "left", "confidence": 0.7, "attached_share": 0.3}})


@pytest.fixture(scope="module")
def matting() -> MattingPipeline:
    return MattingPipeline(ClassicalAlphaEstimator())


def test_the_pipeline_keeps_the_subject_exact_whatever_the_scene_paints(matting):
    case = synthetic.make_case("hair", "white", width=161, height=121, supersample=2)
    stages = []
    output = ReplaceBackgroundPipeline(matting, PaintEverything())(
        case.image, "a meadow", 5, True, on_stage=stages.append)
    opaque = output.alpha == 255
    assert opaque.sum() > 1000
    assert np.array_equal(output.image[opaque], case.image[opaque])
    clear = output.alpha == 0
    assert np.all(output.image[clear] == np.array([0, 204, 0], np.uint8))  # green * shadow
    assert stages == ["matting", "generating", "composing"]
    assert output.scene_generated is True
    assert output.light == {"direction": "left", "confidence": 0.7}
    assert output.scene == {"engine": "paint-everything", "prompt": "a meadow", "seed": 5}
    assert output.engine == {"matting": "classical", "scene": "paint-everything"}


def test_the_public_subject_facts_are_the_bbox_and_coverage_and_the_rest_is_diagnostics(matting):
    case = synthetic.make_case("product", "white", width=121, height=91, supersample=2)
    output = ReplaceBackgroundPipeline(matting, PaintEverything())(case.image, " x ", 1, True)
    assert set(output.subject) == {"bbox", "coverage"}
    solid = np.argwhere(output.alpha >= 128)
    assert output.subject["bbox"] == [int(solid[:, 1].min()), int(solid[:, 0].min()),
                                      int(solid[:, 1].max()) + 1, int(solid[:, 0].max()) + 1]
    assert output.diagnostics["scene"]["light_direction"] == "left"
    assert "opaque_share" in output.diagnostics["matting"]
    assert output.shadow is not None and output.shadow["state"] in ("kept", "none_found")


def test_without_preserve_shadow_no_shadow_reaches_the_output(matting):
    case = synthetic.make_case("product", "white", width=121, height=91, supersample=2)
    output = ReplaceBackgroundPipeline(matting, PaintEverything())(case.image, "x", 1, False)
    assert np.all(output.image[output.alpha == 0] == np.array([0, 255, 0], np.uint8))


def test_the_plain_scene_says_no_scene_was_generated(matting):
    case = synthetic.make_case("product", "grey", width=121, height=91, supersample=2)
    output = ReplaceBackgroundPipeline(matting, PlainSceneGenerator())(case.image, "x", 3, True)
    assert output.scene_generated is False and output.seed == 3
    assert output.engine["scene"] == "plain"
    assert output.subject["bbox"] is not None and 0 < output.subject["coverage"] < 1
    assert np.array_equal(output.image[output.alpha == 255], case.image[output.alpha == 255])


def test_a_scene_of_the_wrong_size_is_caught_before_composing(matting):
    class WrongSize:
        name = "wrong"

        def __call__(self, request: SceneRequest) -> Scene:
            return Scene(background=np.zeros((4, 4, 3), np.float32), shadow=None)

    case = synthetic.make_case("product", "grey", width=81, height=61, supersample=1)
    with pytest.raises(ValueError):
        ReplaceBackgroundPipeline(matting, WrongSize())(case.image, "x", 1, True)
