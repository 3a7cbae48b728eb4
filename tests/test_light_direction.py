"""Light direction on rendered objects lit from known directions.

Each case is a Lambertian sphere, upright cylinder or box, ray-cast orthographically with
its own colour, size, position, pose, ambient level and sensor noise, lit from a jittered
direction whose largest component is the label. The estimator sees only the 8-bit image
and the alpha.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from gpu_worker.light import DIRECTIONS, LightEstimate, estimate_light_direction

SIZE = 128
SUPERSAMPLE = 2


@dataclass(frozen=True)
class LitCase:
    shape: str
    label: str
    light: np.ndarray
    image: np.ndarray
    alpha: np.ndarray


def _rotation(elevation: float, yaw: float) -> np.ndarray:
    """Object to camera: yaw about the object's vertical axis, then tilt the camera down."""
    cy, sy = np.cos(yaw), np.sin(yaw)
    ce, se = np.cos(elevation), np.sin(elevation)
    yaw_m = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    tilt = np.array([[1, 0, 0], [0, ce, -se], [0, se, ce]])
    return tilt @ yaw_m


def _raycast(shape: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Hit mask and camera-space normals (x right, y up, z to viewer) at SIZE*SUPERSAMPLE."""
    n = SIZE * SUPERSAMPLE
    coords = (np.arange(n) + 0.5) / n * 2 - 1  # -1..1
    px, py = np.meshgrid(coords, -coords)  # py up
    centre = rng.uniform(-0.15, 0.15, size=2)
    scale = rng.uniform(0.45, 0.7)
    rot = _rotation(elevation=rng.uniform(0.25, 0.45), yaw=rng.uniform(0.35, 1.2))
    # Rays along -z from z=+10, in the object's frame.
    origin = np.stack([px - centre[0], py - centre[1], np.full_like(px, 10.0)], -1) / scale
    o = origin @ rot  # row-vector form of R^T o
    d = np.array([0.0, 0.0, -1.0]) @ rot
    inf = np.full(px.shape, np.inf)
    if shape == "sphere":
        b = o @ d
        c = (o * o).sum(-1) - 1.0
        disc = b * b - c
        t = np.where(disc > 0, -b - np.sqrt(np.maximum(disc, 0)), inf)
        hit = np.isfinite(t)
        normal_obj = o + t[..., None] * d[None, None, :]
    elif shape == "cylinder":
        radius, half_height = 0.6, 0.9
        a = d[0] ** 2 + d[2] ** 2
        b = o[..., 0] * d[0] + o[..., 2] * d[2]
        c = o[..., 0] ** 2 + o[..., 2] ** 2 - radius**2
        disc = b * b - a * c
        t_side = np.where(disc > 0, (-b - np.sqrt(np.maximum(disc, 0))) / a, inf)
        y_side = o[..., 1] + t_side * d[1]
        t_side = np.where(np.abs(y_side) <= half_height, t_side, inf)
        t_cap = (half_height - o[..., 1]) / d[1]
        cap_point = o + t_cap[..., None] * d
        on_cap = cap_point[..., 0] ** 2 + cap_point[..., 2] ** 2 <= radius**2
        t_cap = np.where(on_cap & (t_cap > 0), t_cap, inf)
        t = np.minimum(t_side, t_cap)
        hit = np.isfinite(t)
        point = o + np.where(hit, t, 0)[..., None] * d
        side_normal = np.stack([point[..., 0], np.zeros_like(t), point[..., 2]], -1)
        cap_normal = np.broadcast_to(np.array([0.0, 1.0, 0.0]), side_normal.shape)
        normal_obj = np.where((t_cap <= t_side)[..., None], cap_normal, side_normal)
    elif shape == "box":
        half = np.array([rng.uniform(0.5, 0.7), rng.uniform(0.5, 0.9), rng.uniform(0.5, 0.7)])
        with np.errstate(divide="ignore"):
            t1 = (-half - o) / d
            t2 = (half - o) / d
        t_near = np.minimum(t1, t2).max(-1)
        t_far = np.maximum(t1, t2).min(-1)
        hit = t_near < t_far
        axis = np.minimum(t1, t2).argmax(-1)
        sign = -np.sign(d)[axis]
        normal_obj = np.zeros(px.shape + (3,))
        for k in range(3):
            normal_obj[..., k] = np.where(axis == k, sign, 0.0)
    else:
        raise ValueError(shape)
    with np.errstate(invalid="ignore"):
        normal_obj = np.where(hit[..., None], normal_obj, np.array([0.0, 0.0, 1.0]))
    normal_obj = normal_obj / np.linalg.norm(normal_obj, axis=-1, keepdims=True)
    normals = normal_obj @ rot.T
    return hit, normals


def _light_vector(label: str, rng: np.random.Generator) -> np.ndarray:
    if label in ("left", "right"):
        v = [-1.0 if label == "left" else 1.0, rng.uniform(-0.2, 0.4), rng.uniform(0.2, 0.6)]
    elif label == "above":
        v = [rng.uniform(-0.35, 0.35), 1.0, rng.uniform(0.2, 0.6)]
    else:
        v = [rng.uniform(-0.3, 0.3), rng.uniform(-0.1, 0.3), 1.0]
    v = np.array(v)
    return v / np.linalg.norm(v)


def render_lit_object(shape: str, label: str, seed: int) -> LitCase:
    rng = np.random.default_rng(seed)
    hit, normals = _raycast(shape, rng)
    light = _light_vector(label, rng)
    albedo = rng.uniform(0.15, 0.9, size=3)
    ambient = rng.uniform(0.03, 0.15)
    shade = ambient + np.clip(normals @ light, 0, None)
    linear = albedo * shade[..., None] * rng.uniform(0.7, 1.0)
    backdrop = rng.uniform(0.2, 0.9, size=3)
    linear = np.where(hit[..., None], linear, backdrop)
    # Box-average the supersamples: true fractional coverage on the outline.
    n = SIZE
    linear = linear.reshape(n, SUPERSAMPLE, n, SUPERSAMPLE, 3).mean(axis=(1, 3))
    alpha = hit.reshape(n, SUPERSAMPLE, n, SUPERSAMPLE).mean(axis=(1, 3)).astype(np.float32)
    srgb = np.where(linear <= 0.0031308, linear * 12.92, 1.055 * np.clip(linear, 0, None) ** (1 / 2.4) - 0.055)
    srgb = srgb + rng.normal(0, 0.01, srgb.shape)
    image = np.clip(np.round(srgb * 255), 0, 255).astype(np.uint8)
    return LitCase(shape, label, light, image, alpha)


def all_cases() -> list[LitCase]:
    cases = []
    seed = 100
    for shape in ("sphere", "cylinder", "box"):
        for label in DIRECTIONS:
            for _ in range(4):
                cases.append(render_lit_object(shape, label, seed))
                seed += 1
    return cases


@pytest.fixture(scope="module")
def cases() -> list[LitCase]:
    return all_cases()


def test_it_names_the_light_direction_in_at_least_90_percent_of_rendered_cases(cases):
    wrong = []
    for case in cases:
        estimate = estimate_light_direction(case.image, case.alpha)
        if estimate.direction != case.label:
            wrong.append(f"{case.shape}/{case.label} -> {estimate.direction}")
    accuracy = 1 - len(wrong) / len(cases)
    assert len(cases) >= 40
    assert accuracy >= 0.9, f"accuracy {accuracy:.2f}; wrong: {wrong}"


def test_it_is_right_for_every_direction_on_a_sphere(cases):
    for label in DIRECTIONS:
        spheres = [c for c in cases if c.shape == "sphere" and c.label == label]
        hits = sum(estimate_light_direction(c.image, c.alpha).direction == label for c in spheres)
        assert hits >= len(spheres) - 1, f"{label}: {hits}/{len(spheres)}"


def test_the_estimated_vector_points_within_35_degrees_of_the_truth_on_spheres(cases):
    for case in (c for c in cases if c.shape == "sphere"):
        estimate = estimate_light_direction(case.image, case.alpha)
        angle = np.degrees(np.arccos(np.clip(np.dot(estimate.vector, case.light), -1, 1)))
        assert angle < 35, f"{case.label}: {angle:.1f} degrees off"


def test_it_does_not_depend_on_the_image_resolution():
    case = render_lit_object("sphere", "left", seed=7)
    big_image = np.kron(case.image, np.ones((4, 4, 1), np.uint8))
    big_alpha = np.kron(case.alpha, np.ones((4, 4), np.float32))
    assert estimate_light_direction(big_image, big_alpha).direction == "left"


def test_it_reports_no_direction_when_there_is_no_opaque_subject():
    image = np.full((64, 64, 3), 200, np.uint8)
    alpha = np.zeros((64, 64), np.float32)
    estimate = estimate_light_direction(image, alpha)
    assert estimate == LightEstimate(None, None, 0.0)
    assert estimate.as_facts()["direction"] is None
