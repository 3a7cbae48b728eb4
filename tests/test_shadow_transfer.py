"""The carried shadow, on rendered studio shots whose shadow is known exactly.

A bottle-shaped subject stands on a plain backdrop (white, grey, coloured, gradient). The
truth is a multiplier on the backdrop: a soft elliptical contact shadow around the base,
or a hard-edged cast shadow reaching far to the side, or none. The image is the subject
composed over ``backdrop * truth`` with 8-bit rounding and sensor noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from gpu_worker.shadow import estimate_contact_shadow

HEIGHT, WIDTH = 360, 480
SUPERSAMPLE = 3


@dataclass(frozen=True)
class ShadowScene:
    image: np.ndarray  # uint8
    alpha: np.ndarray
    truth: np.ndarray  # multiplier, 1 = no shadow
    base_y: float
    subject_height: float


def _backdrop(kind: str) -> np.ndarray:
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    if kind == "white":
        return np.full((HEIGHT, WIDTH, 3), 0.96, np.float32)
    if kind == "grey":
        return np.full((HEIGHT, WIDTH, 3), 0.62, np.float32)
    if kind == "coloured":
        return np.broadcast_to(np.array([0.85, 0.72, 0.55], np.float32), (HEIGHT, WIDTH, 3)).copy()
    if kind == "gradient":  # a studio sweep: brighter at the top, a touch of vignette
        vertical = 0.93 - 0.25 * ys / HEIGHT
        vignette = 0.05 * ((xs - WIDTH / 2) / WIDTH) ** 2
        value = vertical - vignette
        return np.stack([value, value * 0.98, value * 0.95], -1).astype(np.float32)
    raise ValueError(kind)


def _bottle_alpha(cx: float, base_y: float, height: float) -> np.ndarray:
    s = SUPERSAMPLE
    ys, xs = np.mgrid[0 : HEIGHT * s, 0 : WIDTH * s].astype(np.float32)
    xs, ys = (xs + 0.5) / s, (ys + 0.5) / s
    body_w, neck_w = 0.34 * height, 0.12 * height
    top = base_y - height
    body = (np.abs(xs - cx) <= body_w / 2) & (ys <= base_y) & (ys >= top + 0.4 * height)
    shoulder = ((xs - cx) / (body_w / 2)) ** 2 + ((ys - (top + 0.4 * height)) / (0.12 * height)) ** 2 <= 1
    neck = (np.abs(xs - cx) <= neck_w / 2) & (ys >= top) & (ys <= top + 0.4 * height)
    inside = body | shoulder | neck
    return inside.reshape(HEIGHT, s, WIDTH, s).mean(axis=(1, 3)).astype(np.float32)


def soft_contact_shadow(cx: float, base_y: float, height: float, peak: float) -> np.ndarray:
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    spread_x, spread_y = 0.32 * height, 0.07 * height
    falloff = np.exp(-(((xs - cx) / spread_x) ** 2) - ((ys - base_y) / spread_y) ** 2)
    return (1.0 - peak * falloff).astype(np.float32)


def hard_cast_shadow(cx: float, base_y: float, height: float, depth: float) -> np.ndarray:
    """A lamp low on the left: a sharp-edged band from the base far to the right."""
    s = SUPERSAMPLE
    ys, xs = np.mgrid[0 : HEIGHT * s, 0 : WIDTH * s].astype(np.float32)
    xs, ys = (xs + 0.5) / s, (ys + 0.5) / s
    half = 0.17 * height
    along = xs - cx
    inside = (along >= 0) & (along <= 1.3 * height) & (np.abs(ys - (base_y - 0.08 * along)) <= half * 0.6)
    cover = inside.reshape(HEIGHT, s, WIDTH, s).mean(axis=(1, 3))
    return (1.0 - depth * cover).astype(np.float32)


def make_scene(backdrop: str, shadow: str, seed: int = 0) -> ShadowScene:
    rng = np.random.default_rng(seed)
    cx, base_y, height = WIDTH * 0.45, HEIGHT * 0.82, HEIGHT * 0.6
    alpha = _bottle_alpha(cx, base_y, height)
    if shadow == "soft":
        truth = soft_contact_shadow(cx, base_y, height, peak=0.55)
    elif shadow == "hard":
        truth = hard_cast_shadow(cx, base_y, height, depth=0.6)
    else:
        truth = np.ones((HEIGHT, WIDTH), np.float32)
    floor = _backdrop(backdrop) * truth[..., None]
    foreground = np.array([0.15, 0.35, 0.2], np.float32)
    linear = alpha[..., None] * foreground + (1 - alpha[..., None]) * floor
    noisy = linear + rng.normal(0, 1.0 / 255, linear.shape)
    image = np.clip(np.round(noisy * 255), 0, 255).astype(np.uint8)
    return ShadowScene(image, alpha, truth, base_y, height)


def _outside(scene: ShadowScene) -> np.ndarray:
    return scene.alpha < 0.01


@pytest.mark.parametrize("backdrop", ["white", "grey", "coloured", "gradient"])
def test_a_soft_contact_shadow_is_carried_over_within_a_small_error(backdrop):
    scene = make_scene(backdrop, "soft", seed=1)
    estimate = estimate_contact_shadow(scene.image, scene.alpha)
    assert estimate.carried
    outside = _outside(scene)
    shadowed = outside & (scene.truth < 0.98)
    error = np.abs(estimate.multiplier - scene.truth)
    assert error[shadowed].mean() < 0.03, error[shadowed].mean()
    assert error[outside].max() < 0.12, error[outside].max()
    # The darkest part survives: the subject still stands on the floor.
    assert estimate.multiplier[outside].min() < scene.truth[outside].min() + 0.08


@pytest.mark.parametrize("backdrop", ["white", "grey", "coloured", "gradient"])
def test_no_shadow_is_carried_when_there_was_none(backdrop):
    scene = make_scene(backdrop, "none", seed=2)
    estimate = estimate_contact_shadow(scene.image, scene.alpha)
    assert estimate.multiplier.shape == scene.alpha.shape
    assert estimate.multiplier.dtype == np.float32
    assert estimate.multiplier.min() > 0.98
    assert not estimate.carried


def test_a_harsh_far_reaching_cast_shadow_is_dropped_except_near_the_base():
    scene = make_scene("white", "hard", seed=3)
    estimate = estimate_contact_shadow(scene.image, scene.alpha)
    outside = _outside(scene)
    truth_darkness = (1 - scene.truth)[outside].sum()
    kept_darkness = (1 - estimate.multiplier)[outside].sum()
    assert kept_darkness < 0.25 * truth_darkness
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]
    far = outside & (xs > WIDTH * 0.45 + 0.5 * scene.subject_height)
    assert estimate.multiplier[far].min() > 0.98
    assert estimate.facts["hardness"] > 0.5


def test_a_soft_shadow_is_judged_soft():
    estimate = estimate_contact_shadow(*_image_alpha(make_scene("grey", "soft", seed=4)))
    assert estimate.facts["hardness"] < 0.5


def test_a_textured_backdrop_carries_no_shadow():
    scene = make_scene("white", "soft", seed=5)
    rng = np.random.default_rng(5)
    texture = rng.integers(0, 90, size=(HEIGHT // 8, WIDTH // 8, 1)).repeat(8, 0).repeat(8, 1)
    busy = np.clip(scene.image.astype(int) - texture * (scene.alpha[..., None] < 0.5), 0, 255).astype(np.uint8)
    estimate = estimate_contact_shadow(busy, scene.alpha)
    assert not estimate.carried
    assert estimate.facts["reason"] == "backdrop_not_plain"
    assert (estimate.multiplier == 1).all()


def test_the_multiplier_comes_back_at_the_source_size_for_large_odd_sized_images():
    scene = make_scene("white", "soft", seed=6)
    big_image = np.kron(scene.image, np.ones((3, 3, 1), np.uint8))[:1079, :1439]
    big_alpha = np.kron(scene.alpha, np.ones((3, 3), np.float32))[:1079, :1439]
    estimate = estimate_contact_shadow(big_image, big_alpha)
    assert estimate.multiplier.shape == (1079, 1439)
    assert estimate.carried


def _image_alpha(scene: ShadowScene) -> tuple[np.ndarray, np.ndarray]:
    return scene.image, scene.alpha
