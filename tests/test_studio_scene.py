"""The studio scene engine: colours from words, sweeps, gradients, grain, and pure white.

The pipeline tests run the real thing: a studio photo with a known soft contact shadow
(gpu_worker.studio_truth), matted by the classical engine, painted by the studio engine,
composed by our composite; then they read the final uint8 pixels. Pure white must be
exactly 255 wherever the kept shadow does not fall, the kept shadow must darken the new
floor under the subject, and the subject's opaque pixels must be the source's.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from PIL import ImageColor

from gpu_worker import studio_truth
from gpu_worker.matting.classical import ClassicalAlphaEstimator
from gpu_worker.matting.engine import MattingPipeline
from gpu_worker.pipeline import ReplaceBackgroundPipeline
from gpu_worker.scene.colours import find_colours, parse_colour, tokenize
from gpu_worker.scene.studio import (StudioSceneGenerator, prompt_light_direction,
                                     read_backdrop)
from gpu_worker.stages import SceneRequest

WIDTH, HEIGHT = 480, 360


def css(name: str) -> tuple[int, int, int]:
    return ImageColor.getrgb(name)[:3]


def to_u8(background: np.ndarray) -> np.ndarray:
    """Quantised exactly as the composite quantises a background where alpha is 0."""
    return np.clip(background * 255.0 + 0.5, 0, 255).astype(np.uint8)


def luma(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float64) @ np.array([0.2126, 0.7152, 0.0722])


def request(prompt: str, height: int = 300, width: int = 400, seed: int = 1,
            subject: tuple[float, float, float, float] = (0.4, 0.35, 0.6, 0.8),
            image: np.ndarray | None = None) -> SceneRequest:
    """A grey box subject (x0, y0, x1, y1 as shares of the frame) on a grey photo."""
    alpha = np.zeros((height, width), np.float32)
    x0, y0, x1, y1 = subject
    alpha[int(y0 * height):int(y1 * height), int(x0 * width):int(x1 * width)] = 1.0
    if image is None:
        image = np.full((height, width, 3), 180, np.uint8)
    return SceneRequest(image=image, alpha=alpha, foreground=image / 255.0, prompt=prompt,
                        seed=seed, preserve_shadow=False)


# --- Colours from words ---------------------------------------------------------------


@pytest.mark.parametrize("words,expected", [
    ("white", css("white")),
    ("navy", css("navy")),
    ("teal", css("teal")),
    ("#ff8800", (255, 136, 0)),
    ("#F80", (255, 136, 0)),
    ("#0a0B0c", (10, 11, 12)),
    ("sky blue", css("skyblue")),
    ("light grey", css("lightgray")),
    ("light gray", css("lightgray")),
    ("dark slate grey", css("darkslategray")),
    ("hot pink", css("hotpink")),
    ("Light Sea Green", css("lightseagreen")),
])
def test_it_reads_css_names_and_hex_codes_however_they_are_written(words, expected):
    assert parse_colour(words) == expected


@pytest.mark.parametrize("words", ["marble", "kitchen", "light", "#ff88", "#ggg", "pink paper",
                                   "", "pastel"])
def test_it_reads_no_colour_where_none_is_named(words):
    assert parse_colour(words) is None


def test_pastel_light_and_soft_colours_are_the_colour_moved_towards_white():
    for base in ("teal", "navy", "maroon", "olive", "charcoal", "#336699"):
        plain = np.array(parse_colour(base))
        for modifier in ("pastel", "light", "soft", "pale"):
            lighter = np.array(parse_colour(f"{modifier} {base}"))
            assert (lighter >= plain).all() and lighter.sum() > plain.sum(), (modifier, base)
            # The same hue: moved along the line to white, not rotated.
            towards_white = (lighter - plain) / np.maximum(255 - plain, 1)
            assert np.ptp(towards_white) < 0.02, (modifier, base)


def test_the_named_pastels_are_light_and_keep_their_hue():
    for base in ("pink", "blue", "green", "yellow", "orange", "red", "purple"):
        plain, pastel = np.array(parse_colour(base)), np.array(parse_colour(f"pastel {base}"))
        assert pastel.sum() > plain.sum(), base
        assert np.argmax(pastel) == np.argmax(plain) or plain.max() == sorted(plain)[-2], base
        # Paler: a smaller spread between the channels relative to the brightest one.
        assert np.ptp(pastel) / pastel.max() < np.ptp(plain) / plain.max(), base


def test_dark_colours_are_darker_and_dark_grey_is_darker_than_grey():
    for base in ("grey", "navy", "teal", "red"):
        assert sum(parse_colour(f"dark {base}")) < sum(parse_colour(base)), base
    assert sum(parse_colour("dark grey")) < sum(parse_colour("grey")) < sum(parse_colour("light grey"))


def test_off_white_is_almost_white_and_charcoal_is_an_almost_neutral_dark_grey():
    off_white = np.array(parse_colour("off-white"))
    assert parse_colour("off white") == tuple(off_white)
    assert off_white.min() >= 235 and tuple(off_white) != (255, 255, 255)
    charcoal = np.array(parse_colour("charcoal"))
    assert charcoal.max() <= 80 and charcoal.max() - charcoal.min() <= 15


def test_it_finds_every_colour_of_a_sentence_in_order_and_flags_names_that_are_things():
    colours = find_colours(tokenize("Gradient from navy to teal, with a #FFF edge"))
    assert [c.phrase for c in colours] == ["navy", "teal", "#fff"]
    assert [c.hex for c in colours] == ["#000080", "#008080", "#ffffff"]
    assert find_colours(tokenize("snow"))[0].ambiguous
    assert not find_colours(tokenize("white"))[0].ambiguous


# --- What the prompt asks for -----------------------------------------------------------


@pytest.mark.parametrize("prompt,kind,colours,pure", [
    ("pure white background", "solid", ["#ffffff"], True),
    ("white", "solid", ["#ffffff"], True),
    ("white studio background", "solid", ["#ffffff"], True),
    ("pure white paper sweep", "solid", ["#ffffff"], True),
    ("white paper sweep", "sweep", ["#ffffff"], False),
    ("#ff8800 backdrop", "solid", ["#ff8800"], False),
    ("soft grey paper sweep", "sweep", None, False),
    ("pastel pink studio background", "sweep", None, False),
    ("charcoal seamless", "sweep", None, False),
    ("off-white background with soft shadow", "solid", None, False),
    ("gradient from navy to teal", "gradient", ["#000080", "#008080"], False),
    ("navy and teal background", "gradient", ["#000080", "#008080"], False),
    ("plain studio", "sweep", None, False),
])
def test_it_reads_the_backdrop_kind_and_colours_from_the_prompt(prompt, kind, colours, pure):
    backdrop = read_backdrop(prompt)
    facts = backdrop.as_facts(0.0, 0.0)
    assert (backdrop.kind, backdrop.pure_white) == (kind, pure)
    if colours is not None:
        assert facts["colours"] == colours


@pytest.mark.parametrize("prompt,direction", [
    ("grey sweep, soft light from the left", "left"),
    ("teal seamless lit from the right", "right"),
    ("top-lit white paper sweep", "above"),
    ("charcoal sweep with overhead light", "above"),
    ("pastel blue background, frontal light", "front"),
    ("light grey sweep", None),
    ("gradient from white on the left to grey on the right", None),
])
def test_it_reads_the_light_direction_only_from_words_about_the_light(prompt, direction):
    assert prompt_light_direction(prompt) == direction


# --- The backdrop itself ----------------------------------------------------------------


def test_the_sweep_is_brighter_on_the_side_the_prompt_lights_it_from():
    flat = StudioSceneGenerator(grain=0.0)
    for side in ("left", "right"):
        scene = flat(request(f"light grey paper sweep, light from the {side}"))
        columns = luma(scene.background).mean(axis=0)
        steps = np.diff(columns)
        assert (steps <= 1e-7).all() if side == "left" else (steps >= -1e-7).all(), side
        assert abs(columns[0] - columns[-1]) > 0.03
        assert scene.facts["light"]["source"] == "prompt"
        assert scene.facts["light"]["confidence"] == 1.0
        assert scene.facts["light_direction"] == side


def test_the_wall_brightens_down_into_the_curve_and_the_floor_turns_smoothly_into_it():
    scene = StudioSceneGenerator(grain=0.0)(request("soft grey paper sweep, front light"))
    horizon = scene.facts["backdrop"]["horizon"]
    column = luma(scene.background[:, 200])
    wall = column[: int((horizon - 0.12) * len(column))]
    assert (np.diff(wall) >= -1e-7).all() and wall[-1] - wall[0] > 0.02
    # No visible edge anywhere: the curve blends the wall into the floor.
    assert np.abs(np.diff(column)).max() < 0.004
    # Under front light the wall (facing the camera) is brighter than the floor's front.
    assert column[int(horizon * len(column)) - 40] > column[-1]


def test_light_from_above_makes_the_floor_brighter_than_the_wall():
    scene = StudioSceneGenerator(grain=0.0)(request("grey paper sweep, light from above"))
    column = luma(scene.background[:, 200])
    horizon = scene.facts["backdrop"]["horizon"]
    floor = column[int((horizon + 0.13) * len(column))]
    wall = column[int((horizon - 0.13) * len(column))]
    assert floor > wall


def test_the_curve_sits_behind_the_subject_and_moves_with_its_base():
    generator = StudioSceneGenerator(grain=0.0)
    high = generator(request("grey sweep", subject=(0.4, 0.2, 0.6, 0.6))).facts["backdrop"]["horizon"]
    low = generator(request("grey sweep", subject=(0.4, 0.4, 0.6, 0.9))).facts["backdrop"]["horizon"]
    assert 0.3 <= high < low < 0.9
    assert low < 0.9  # above the base: the product stands on the floor, not on the curve
    portrait = generator(request("grey sweep", subject=(0.3, 0.3, 0.7, 1.0))).facts["backdrop"]
    assert portrait["horizon"] > 1.0  # cut off at the bottom: no floor in frame


def lit_sphere(size: int, light: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """A Lambertian grey sphere on a grey photo, and its alpha."""
    coords = (np.arange(size) + 0.5) / size * 2 - 1
    x, y = np.meshgrid(coords, -coords)
    inside = x**2 + y**2 < 0.6**2
    nx, ny = x / 0.6, y / 0.6
    nz = np.sqrt(np.clip(1 - nx**2 - ny**2, 0, 1))
    unit = np.asarray(light) / np.linalg.norm(light)
    shade = 0.05 + 0.9 * np.clip(nx * unit[0] + ny * unit[1] + nz * unit[2], 0, 1)
    image = np.where(inside[..., None], shade[..., None] * 220, 170).astype(np.uint8)
    return np.repeat(image, 3, axis=2), inside.astype(np.float32)


def test_without_a_direction_in_the_prompt_the_subjects_own_light_decides():
    image, alpha = lit_sphere(240, (0.9, 0.1, 0.4))
    req = replace(request("grey paper sweep", height=240, width=240), image=image, alpha=alpha,
                  foreground=image / 255.0)
    scene = StudioSceneGenerator(grain=0.0)(req)
    assert scene.facts["light"]["source"] == "subject"
    assert scene.facts["light"]["direction"] == scene.facts["light_direction"] == "right"
    columns = luma(scene.background).mean(axis=0)
    assert columns[-10:].mean() > columns[:10].mean() + 0.02


def test_gradients_run_from_the_first_colour_to_the_second():
    vertical = StudioSceneGenerator(grain=0.0)(request("gradient from navy to teal")).background
    assert np.allclose(to_u8(vertical[0, 0]), css("navy"), atol=1)
    assert np.allclose(to_u8(vertical[-1, -1]), css("teal"), atol=1)
    horizontal = StudioSceneGenerator(grain=0.0)(
        request("horizontal gradient from white to black")).background
    row = luma(horizontal[150])
    assert (np.diff(row) <= 1e-6).all() and row[0] > 0.98 and row[-1] < 0.02
    radial = StudioSceneGenerator(grain=0.0)(request("radial gradient from white to grey"))
    centre, corner = luma(radial.background[150, 200]), luma(radial.background[0, 0])
    assert centre > corner
    assert radial.facts["backdrop"]["orientation"] == "radial"


def test_a_solid_colour_is_that_colour_on_average_with_a_fine_grain_on_top():
    scene = StudioSceneGenerator()(request("#808080 backdrop", height=400, width=400))
    values = to_u8(scene.background)
    assert abs(values.mean() - 128) < 0.1
    assert 0.5 < values.astype(float).std() < 2.0  # grain: about one level, not speckle
    # Monochrome grain: the three channels move together.
    assert np.array_equal(values[..., 0], values[..., 2])
    assert scene.facts["backdrop"]["grain"] > 0


def test_pure_white_has_no_grain_and_no_fall_off_at_all():
    scene = StudioSceneGenerator()(request("pure white background", height=400, width=400))
    assert (scene.background == 1.0).all()
    assert scene.facts["backdrop"] == {"kind": "solid", "colours": ["#ffffff"], "grain": 0.0,
                                       "falloff": 0.0, "pure_white": True}


def longest_run_of_identical_rows(image: np.ndarray) -> int:
    same = np.all(image[1:] == image[:-1], axis=(1, 2))
    longest = run = 0
    for equal in same:
        run = run + 1 if equal else 0
        longest = max(longest, run)
    return longest + 1


def staircase_error(image: np.ndarray, ideal: np.ndarray) -> float:
    """Largest distance, in 8-bit levels, between a row's mean and the smooth ramp."""
    return float(np.abs(image.mean(axis=1) - ideal).max())


def test_a_large_gradient_does_not_band_once_quantised():
    height, width = 1600, 400
    prompt = "gradient from navy to teal"
    grained = to_u8(StudioSceneGenerator()(request(prompt, height, width)).background)
    banded = to_u8(StudioSceneGenerator(grain=0.0)(request(prompt, height, width)).background)
    # Green climbs from 0 to 128 over 1600 rows; keep away from the clipped ends.
    t = (np.arange(height) + 0.5) / height
    ideal = 128 * t
    rows = slice(int(0.05 * height), int(0.95 * height))
    assert longest_run_of_identical_rows(grained) <= 2
    assert staircase_error(grained[rows, :, 1], ideal[rows]) < 0.2
    # The same checks catch the bands of a gradient painted without grain.
    assert longest_run_of_identical_rows(banded) > 8
    assert staircase_error(banded[rows, :, 1], ideal[rows]) > 0.4


def test_the_same_seed_paints_the_same_backdrop_and_another_seed_other_grain():
    generator = StudioSceneGenerator()
    one = generator(request("pastel pink studio background", seed=11)).background
    again = generator(request("pastel pink studio background", seed=11)).background
    other = generator(request("pastel pink studio background", seed=12)).background
    assert np.array_equal(one, again)
    assert not np.array_equal(one, other)
    assert abs(float(one.mean()) - float(other.mean())) < 1e-3


def test_the_backdrop_is_painted_at_the_requests_full_resolution():
    for prompt in ("pure white background", "charcoal seamless", "gradient from navy to teal",
                   "#ff8800 backdrop"):
        scene = StudioSceneGenerator()(request(prompt, height=123, width=457))
        assert scene.background.shape == (123, 457, 3)
        assert scene.background.dtype == np.float32
        assert 0.0 <= float(scene.background.min()) and float(scene.background.max()) <= 1.0


def test_the_facts_say_what_was_painted_and_by_which_engine():
    facts = StudioSceneGenerator()(request("  charcoal seamless, light from the left ")).facts
    assert facts["scene_generated"] is True and facts["scene_model"] == "studio"
    assert facts["prompt"] == "charcoal seamless, light from the left"
    assert facts["light"]["direction"] == facts["light_direction"] == "left"
    assert {"direction", "vector", "confidence", "source"} <= set(facts["light"])
    assert facts["backdrop"]["kind"] == "sweep"
    assert facts["backdrop"]["colours"] == ["#363a3e"] == ["#{:02x}{:02x}{:02x}".format(
        *parse_colour("charcoal"))]


def test_asked_for_its_own_shadow_it_carries_the_photos_contact_shadow():
    # The pipeline asks only when the matting engine separated none (a learned engine).
    case = studio_truth.make_case("bottle/white_soft", WIDTH, HEIGHT, seed=3)
    req = SceneRequest(image=case.image, alpha=case.alpha, foreground=case.foreground,
                       prompt="pure white background", seed=1, preserve_shadow=True)
    kept = StudioSceneGenerator()(req)
    assert kept.shadow is not None and kept.shadow.shape == (HEIGHT, WIDTH)
    assert kept.shadow.min() < 0.85
    dropped = StudioSceneGenerator()(replace(req, preserve_shadow=False))
    assert dropped.shadow is None


# --- Through the real pipeline -----------------------------------------------------------


@pytest.fixture(scope="module")
def studio_photo():
    """A white bottle in its soft contact shadow, as uploaded (noise, JPEG)."""
    return studio_truth.make_case("bottle/white_soft", WIDTH, HEIGHT, seed=4)


@pytest.fixture(scope="module")
def pipeline():
    return ReplaceBackgroundPipeline(MattingPipeline(ClassicalAlphaEstimator()),
                                     StudioSceneGenerator())


@pytest.fixture(scope="module")
def renders(pipeline, studio_photo):
    """Each prompt rendered with and without the photo's shadow, and the matte's shadow layer."""
    outputs = {}
    for prompt in ("pure white background", "pastel pink paper sweep"):
        for keep in (True, False):
            outputs[prompt, keep] = pipeline(studio_photo.image, prompt, 7, keep)
    outputs["shadow_layer"] = pipeline.matting(studio_photo.image).shadow
    return outputs


def test_pure_white_is_exactly_255_everywhere_the_kept_shadow_does_not_fall(renders):
    output = renders["pure white background", True]
    assert output.shadow["state"] == "kept"
    layer = renders["shadow_layer"]
    assert layer is not None and (layer < 0.9).any()
    outside = (output.alpha == 0) & (layer >= 1.0)
    assert outside.mean() > 0.5
    assert (output.image[outside] == 255).all()


def test_pure_white_without_the_shadow_is_255_on_every_backdrop_pixel(renders):
    output = renders["pure white background", False]
    assert output.shadow["state"] == "not_requested"
    backdrop = output.alpha == 0
    assert backdrop.mean() > 0.5
    assert (output.image[backdrop] == 255).all()


def test_the_kept_contact_shadow_darkens_the_new_floor_under_the_subject(renders, studio_photo):
    kept = renders["pastel pink paper sweep", True].image.astype(float)
    clean = renders["pastel pink paper sweep", False].image.astype(float)
    backdrop = (renders["pastel pink paper sweep", True].alpha == 0) & (
        renders["pastel pink paper sweep", False].alpha == 0)
    ratio = np.where(backdrop, kept.mean(axis=2) / np.maximum(clean.mean(axis=2), 1.0), 1.0)
    deep = backdrop & (studio_photo.shadow < 0.7)
    assert deep.sum() > 200
    assert float(np.median(ratio[deep])) < 0.8
    # Away from the shadow, keeping it changes nothing.
    away = backdrop & (renders["shadow_layer"] >= 1.0)
    assert np.array_equal(kept[away], clean[away])
    white = renders["pure white background", True]
    assert float(white.image[deep & (white.alpha == 0)].mean()) < 0.85 * 255


def test_the_subjects_opaque_pixels_are_the_source_bit_for_bit(renders, studio_photo):
    for key in (("pure white background", True), ("pastel pink paper sweep", False)):
        output = renders[key]
        opaque = output.alpha == 255
        assert opaque.sum() > 2000
        assert np.array_equal(output.image[opaque], studio_photo.image[opaque])


def test_the_render_names_the_studio_engine_and_its_backdrop(renders):
    output = renders["pastel pink paper sweep", True]
    assert output.scene_generated is True
    assert output.engine["scene"] == output.scene["engine"] == "studio"
    assert output.scene["prompt"] == "pastel pink paper sweep"
    facts = output.diagnostics["scene"]
    assert facts["scene_model"] == "studio" and facts["backdrop"]["kind"] == "sweep"
    assert output.light == {"direction": facts["light_direction"],
                            "confidence": facts["light"]["confidence"]}
