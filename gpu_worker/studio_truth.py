"""Studio photos with known alpha AND known shadow, for the matting bench and tests.

`synthetic` renders subjects on clean backdrops. Real catalogue photos differ in the ways
that broke the engine, so these cases add them, each with its truth:

    I = alpha * F + (1 - alpha) * S * B      (+ sensor noise, then JPEG 4:2:0)

* B: seamless paper with light fall-off from the top and lens vignetting;
* S in (0, 1]: a shadow ratio. Soft contact shadows (15-60% darkening, blurred, centred
  on the base so the product stands IN its shadow) are what the brief keeps; hard cast
  shadows thrown at an angle by a spotlight (a sheared, squashed copy of the silhouette
  with a one-pixel penumbra) are what it drops;
* shot and read noise, then JPEG at quality 85-95 with 4:2:0 chroma, as uploads are;
* subjects the old engine failed on: dense opaque curly hair, grey on grey and white on
  white products (a shadow and the subject are both "darker backdrop colour"), a motion
  blur on a gradient sweep, and fine flyaway hair.

`kind` says what the brief wants done with the shadow: "soft" keep, "hard" drop, "none".
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np
from PIL import Image

from gpu_worker import synthetic
from gpu_worker.synthetic import (_Layers, _ellipse_points, _fill_polygon, _grid,
                                  _rounded_rect, _shaded, _strands)


@dataclass(frozen=True)
class StudioCase:
    name: str
    image: np.ndarray  # HxWx3 uint8 as uploaded (after noise and JPEG)
    alpha: np.ndarray  # HxW float32 true coverage
    foreground: np.ndarray  # HxWx3 float32
    background: np.ndarray  # HxWx3 float32 the clean backdrop B
    shadow: np.ndarray  # HxW float32 true shadow ratio S (1 = none)
    kind: str  # "soft" | "hard" | "none"
    quality: int  # JPEG quality the input went through (0 = lossless)

    @property
    def subject(self) -> str:
        return self.name.split("/")[0]


def paper(height: int, width: int, rgb: tuple[float, float, float], falloff: float,
          vignette: float) -> np.ndarray:
    """Seamless paper lit from above (darker towards the floor's front and the sides)
    seen through a lens that darkens the corners (cos^4-like vignetting)."""
    x, y = _grid(height, width)
    xn, yn = x / x.max(), y / y.max()
    light = 1.0 - falloff * (0.6 * yn + 0.4 * (2 * xn - 1) ** 2)
    r2 = ((xn - 0.5) ** 2 + (yn - 0.5) ** 2) / 0.5
    lens = (1.0 - vignette * r2) ** 2
    return np.clip(np.asarray(rgb, np.float32) * (light * lens)[..., None], 0, 1
                   ).astype(np.float32)


def contact_shadow(height: int, width: int, cx: float, cy: float, half_width: float,
                   darkness: float, blur: float) -> np.ndarray:
    """A soft ellipse of darkening centred on the base line (unit coordinates)."""
    x, y = _grid(height, width)
    inside = ((x - cx) / half_width) ** 2 + ((y - cy) / (half_width * 0.22)) ** 2 <= 1.0
    soft = cv2.GaussianBlur(inside.astype(np.float32), (0, 0), blur * min(height, width))
    return (1.0 - darkness * soft / max(float(soft.max()), 1e-6)).astype(np.float32)


def cast_shadow(silhouette: np.ndarray, base_y: int, lean: float, squash: float,
                darkness: float, penumbra_px: float = 0.8) -> np.ndarray:
    """A spotlight's hard shadow: the silhouette sheared sideways and squashed onto the
    floor about its base line, with a narrow penumbra."""
    height, width = silhouette.shape
    # Row y of the shadow comes from row base_y - (base_y - y) / squash of the silhouette,
    # shifted by lean * (base_y - y).
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    up = np.maximum(base_y - ys, 0.0)
    src_y = base_y - up / squash
    src_x = xs - lean * up
    m = cv2.remap(silhouette.astype(np.float32), src_x, src_y, cv2.INTER_LINEAR,
                  borderValue=0.0)
    m[ys > base_y] = 0.0
    m = cv2.GaussianBlur(m, (0, 0), penumbra_px)
    return (1.0 - darkness * np.clip(m, 0, 1)).astype(np.float32)


def _bottle(layers: _Layers, x, y, aspect, rng, colour, cx=None) -> tuple[float, float]:
    scale = float(min(layers.height, layers.width))
    cx = aspect / 2.0 if cx is None else cx
    body = _rounded_rect(cx - 0.12, 0.38, cx + 0.12, 0.82, 0.04)
    neck = _rounded_rect(cx - 0.04, 0.20, cx + 0.04, 0.40, 0.01)
    shade = _shaded(colour, x, y, cx, 0.5, 0.3, 0.25)
    for shape in (body, neck):
        layers.add(layers.coverage(_fill_polygon(layers, scale, shape)), shade)
    cap = _rounded_rect(cx - 0.05, 0.15, cx + 0.05, 0.22, 0.01)
    layers.add(layers.coverage(_fill_polygon(layers, scale, cap)),
               _shaded((0.15, 0.15, 0.16), x, y, cx, 0.18, 0.06))
    return cx, 0.82


def _mug(layers: _Layers, x, y, aspect, rng, colour, cx=None) -> tuple[float, float]:
    """A cylinder with a ring handle, shaded like a lit ceramic (darker at the sides)."""
    scale = float(min(layers.height, layers.width))
    cx = aspect / 2.0 if cx is None else cx
    body = _rounded_rect(cx - 0.13, 0.42, cx + 0.13, 0.80, 0.02)
    side = np.clip(1.0 - 0.18 * ((x - cx) / 0.13) ** 2, 0.7, 1.0)
    base = np.asarray(colour, np.float32) * side[..., None]
    handle_outer = layers.coverage(_fill_polygon(layers, scale,
                                                 _ellipse_points(cx + 0.15, 0.58, 0.07, 0.09)))
    handle_inner = layers.coverage(_fill_polygon(layers, scale,
                                                 _ellipse_points(cx + 0.15, 0.58, 0.04, 0.06)))
    layers.add(np.clip(handle_outer - handle_inner, 0, 1).astype(np.float32),
               np.clip(base * 0.9, 0, 1))
    layers.add(layers.coverage(_fill_polygon(layers, scale, body)), np.clip(base, 0, 1))
    return cx, 0.80


def _dense_hair(layers: _Layers, x, y, aspect, rng, colour, cx=None) -> tuple[float, float]:
    """A head of dense curly hair: hundreds of opaque overlapping curls with a ragged
    outline, a face, shoulders out of frame, and sub-pixel flyaways."""
    scale = float(min(layers.height, layers.width))
    cx = aspect / 2.0
    shoulders = _fill_polygon(layers, scale, _ellipse_points(cx, 1.10, 0.38, 0.30))
    layers.add(layers.coverage(shoulders), _shaded((0.70, 0.72, 0.74), x, y, cx, 0.9, 0.4))
    hair = _shaded(colour, x, y, cx, 0.40, 0.3, 0.2)
    mass = _fill_polygon(layers, scale, _ellipse_points(cx, 0.42, 0.20, 0.25))
    layers.add(layers.coverage(mass), hair)
    # Curls: opaque strands 1.5-3 px wide coiling around the outline, densely overlapping.
    n = 900
    theta = rng.uniform(0, 2 * np.pi, n)
    radius = rng.uniform(0.80, 1.02, n)
    roots = np.stack([cx + 0.20 * radius * np.cos(theta), 0.42 + 0.25 * radius * np.sin(theta)], 1)
    tangents = np.stack([-np.sin(theta), np.cos(theta)], 1) * rng.choice([-1, 1], (n, 1))
    curls = _strands(layers, scale, rng, roots, tangents, rng.uniform(0.03, 0.08, n),
                     rng.uniform(1.5, 3.0, n), 4.0)
    layers.add(curls, np.clip(hair * 0.9, 0, 1))
    face = _fill_polygon(layers, scale, _ellipse_points(cx, 0.52, 0.12, 0.16))
    layers.add(layers.coverage(face), _shaded((0.62, 0.44, 0.34), x, y, cx, 0.5, 0.2))
    m = 160
    theta = rng.uniform(np.pi * 1.05, np.pi * 1.95, m)
    roots = np.stack([cx + 0.21 * np.cos(theta), 0.42 + 0.26 * np.sin(theta)], 1)
    normals = np.stack([np.cos(theta), np.sin(theta)], 1)
    fly = _strands(layers, scale, rng, roots, normals, rng.uniform(0.03, 0.09, m),
                   rng.uniform(0.3, 0.9, m), 1.2)
    layers.add(fly, hair)
    return cx, 1.2  # the base is out of frame: no contact shadow


def _fine_hair(layers: _Layers, x, y, aspect, rng, colour, cx=None) -> tuple[float, float]:
    synthetic._subject_hair(layers, rng, x, y, aspect)
    return aspect / 2.0, 1.2


def _motion(layers: _Layers, x, y, aspect, rng, colour, cx=None) -> tuple[float, float]:
    synthetic._subject_motion_blur(layers, rng, x, y, aspect)
    return aspect / 2.0, 0.92


# name: (subject, paper colour, falloff, vignette, shadow kind, darkness, JPEG quality,
#        subject colour)
CASES: dict[str, tuple[Callable, tuple, float, float, str, float, int, tuple]] = {
    "bottle/white_soft": (_bottle, (0.96, 0.96, 0.95), 0.10, 0.10, "soft", 0.45, 90,
                          (0.10, 0.42, 0.26)),
    "bottle/cream_deep": (_bottle, (0.94, 0.90, 0.82), 0.12, 0.12, "soft", 0.60, 85,
                          (0.55, 0.20, 0.45)),
    "mug/white_on_white": (_mug, (0.96, 0.96, 0.96), 0.08, 0.10, "soft", 0.35, 92,
                           (0.93, 0.93, 0.92)),
    "mug/grey_on_grey": (_mug, (0.62, 0.62, 0.63), 0.10, 0.08, "soft", 0.15, 95,
                         (0.54, 0.54, 0.56)),
    "bottle/hard_cast": (_bottle, (0.92, 0.92, 0.92), 0.08, 0.10, "hard", 0.45, 90,
                         (0.75, 0.55, 0.15)),
    "hair/dense_curls": (_dense_hair, (0.80, 0.80, 0.80), 0.12, 0.12, "none", 0.0, 90,
                         (0.14, 0.09, 0.06)),
    "hair/fine_teal": (_fine_hair, (0.45, 0.70, 0.72), 0.12, 0.10, "none", 0.0, 92,
                       (0.0, 0.0, 0.0)),
    "motion/gradient": (_motion, (0.85, 0.87, 0.92), 0.35, 0.12, "none", 0.0, 90,
                        (0.0, 0.0, 0.0)),
}
NAMES: tuple[str, ...] = tuple(CASES)


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """JPEG round trip with 4:2:0 chroma subsampling (what cameras and phones write)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality, subsampling=2)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"))


def make_case(name: str, width: int = 1152, height: int = 864, seed: int = 0,
              supersample: int = 4, compress: bool = True) -> StudioCase:
    subject_fn, rgb, falloff, vignette, kind, darkness, quality, colour = CASES[name]
    rng = np.random.default_rng([seed, NAMES.index(name)])
    background = paper(height, width, rgb, falloff, vignette)
    layers = _Layers(height, width, supersample)
    x, y = _grid(height, width)
    aspect = width / min(height, width)
    cx, base = subject_fn(layers, x, y, aspect, rng, colour)
    alpha = np.clip(layers.alpha, 0.0, 1.0)
    alpha[alpha < 1e-4] = 0.0
    alpha[alpha > 1.0 - 1e-4] = 1.0
    foreground = layers.foreground(background)
    shadow = np.ones((height, width), np.float32)
    if kind == "soft":
        shadow = contact_shadow(height, width, cx, base, 0.20, darkness, 0.018)
    elif kind == "hard":
        base_px = int(round(base * min(height, width)))
        shadow = cast_shadow(alpha >= 0.5, base_px, lean=0.9, squash=0.45,
                             darkness=darkness)
    a = alpha[..., None]
    linear = foreground * a + (1.0 - a) * shadow[..., None] * background
    # Shot noise grows with the signal, read noise does not (about 1.5 levels at mid grey).
    sigma = np.sqrt((0.8 / 255.0) ** 2 + linear * (1.6 / 255.0) ** 2)
    noisy = linear + rng.normal(0.0, 1.0, linear.shape).astype(np.float32) * sigma
    image = np.clip(np.round(noisy * 255.0), 0, 255).astype(np.uint8)
    if compress and quality:
        image = jpeg(image, quality)
    return StudioCase(name, image, alpha.astype(np.float32), foreground, background,
                      shadow, kind, quality if compress else 0)
