"""Test images whose true alpha is known, for the matting tests and benchmarks.

No matting data set can be downloaded here, and a matte cannot be judged by eye in a
test, so the subjects are rendered: every shape is rasterised at `supersample` times the
output resolution and box-averaged down, which gives each pixel its true fractional
coverage (a 0.3 px hair strand really has alpha around 0.3, it is not a feathered
mask). Layers are stacked with the "over" operator in premultiplied colour, so the
truth is exact: ``image = alpha * F + (1 - alpha) * B`` before noise and 8-bit
rounding.

Subjects: sub-pixel hair strands around a head, a translucent dupatta with a fringe of
threads over an opaque figure, a motion-blurred ball and sleeve, a solid product
bottle. Backdrops: white, grey, coloured, smooth gradient. Foreground colours are kept
far from every backdrop so that a halo of the old backdrop is measurable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import cv2
import numpy as np

SUBJECTS: tuple[str, ...] = ("hair", "translucent", "motion_blur", "product")
BACKDROPS: tuple[str, ...] = ("white", "grey", "coloured", "gradient")

# Fixed-point precision for OpenCV drawing: coordinates are multiplied by 2**_SHIFT.
_SHIFT = 4


@dataclass(frozen=True)
class SyntheticCase:
    """One rendered image with its ground truth (all arrays at the same size)."""

    name: str
    subject: str
    backdrop: str
    image: np.ndarray  # HxWx3 uint8, sRGB-encoded values as a camera would store them
    alpha: np.ndarray  # HxW float32 true coverage 0..1
    foreground: np.ndarray  # HxWx3 float32 true foreground colour 0..1
    background: np.ndarray  # HxWx3 float32 the backdrop behind the subject 0..1


class _Layers:
    """Accumulates layers back to front in premultiplied colour ("over")."""

    def __init__(self, height: int, width: int, supersample: int) -> None:
        self.height, self.width, self.s = height, width, supersample
        self.alpha = np.zeros((height, width), np.float32)
        self.premult = np.zeros((height, width, 3), np.float32)

    def canvas(self) -> np.ndarray:
        return np.zeros((self.height * self.s, self.width * self.s), np.uint8)

    def coverage(self, canvas: np.ndarray) -> np.ndarray:
        # The exact block mean (cv2's INTER_AREA would round it to 8 bits).
        blocks = canvas.reshape(self.height, self.s, self.width, self.s)
        total = blocks.sum(axis=(1, 3), dtype=np.uint32)
        return (total.astype(np.float32) / (255.0 * self.s * self.s)).astype(np.float32)

    def add(self, alpha: np.ndarray, colour: np.ndarray) -> None:
        a = alpha[..., None]
        self.premult = colour * a + self.premult * (1.0 - a)
        self.alpha = alpha + self.alpha * (1.0 - alpha)

    def add_premultiplied(self, alpha: np.ndarray, premult: np.ndarray) -> None:
        self.premult = premult + self.premult * (1.0 - alpha[..., None])
        self.alpha = alpha + self.alpha * (1.0 - alpha)

    def foreground(self, fallback: np.ndarray) -> np.ndarray:
        """F = premult / alpha; where alpha is 0 F is undefined, so use the nearest colour."""
        a = self.alpha[..., None]
        f = np.where(a > 1e-6, self.premult / np.maximum(a, 1e-6), fallback)
        return np.clip(f, 0.0, 1.0).astype(np.float32)


def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates normalised by the short side (shapes keep their aspect)."""
    scale = float(min(height, width))
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    return (x + 0.5) / scale, (y + 0.5) / scale


def _pts(points: np.ndarray, layers: _Layers, scale: float) -> np.ndarray:
    """Unit coordinates -> fixed-point supersampled pixel coordinates for OpenCV."""
    return np.round(points * scale * layers.s * (1 << _SHIFT)).astype(np.int32)


def _fill_polygon(layers: _Layers, scale: float, points: np.ndarray) -> np.ndarray:
    canvas = layers.canvas()
    cv2.fillPoly(canvas, [_pts(points, layers, scale)], 255, cv2.LINE_8, _SHIFT)
    return canvas


def _ellipse_points(cx: float, cy: float, rx: float, ry: float, n: int = 720,
                    start: float = 0.0, end: float = 2 * np.pi) -> np.ndarray:
    t = np.linspace(start, end, n, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _rounded_rect(x0: float, y0: float, x1: float, y1: float, r: float) -> np.ndarray:
    corners = [(x1 - r, y1 - r, 0.0), (x0 + r, y1 - r, np.pi / 2),
               (x0 + r, y0 + r, np.pi), (x1 - r, y0 + r, 1.5 * np.pi)]
    parts = [_ellipse_points(cx, cy, r, r, 24, a, a + np.pi / 2) for cx, cy, a in corners]
    return np.concatenate(parts)


def _backdrop(kind: str, height: int, width: int) -> np.ndarray:
    x, y = _grid(height, width)
    xn, yn = x / x.max(), y / y.max()
    if kind == "white":
        base = np.array([0.965, 0.962, 0.955], np.float32)
        shade = 1.0 - 0.012 * ((xn - 0.5) ** 2 + (yn - 0.5) ** 2)
        return (base * shade[..., None]).astype(np.float32)
    if kind == "grey":
        base = np.array([0.50, 0.51, 0.52], np.float32)
        return (base * (1.0 - 0.03 * yn)[..., None]).astype(np.float32)
    if kind == "coloured":
        base = np.array([0.38, 0.66, 0.78], np.float32)
        return (base * (1.0 - 0.02 * xn)[..., None]).astype(np.float32)
    if kind == "gradient":
        top = np.array([0.88, 0.89, 0.93], np.float32)
        bottom = np.array([0.52, 0.56, 0.66], np.float32)
        t = (0.8 * yn + 0.2 * xn)
        t = t * t * (3.0 - 2.0 * t)  # smoothstep: smooth but not a polynomial of order 2
        return (top + (bottom - top) * t[..., None]).astype(np.float32)
    raise ValueError(f"unknown backdrop {kind!r}")


def _shaded(colour: tuple[float, float, float], x: np.ndarray, y: np.ndarray,
            cx: float, cy: float, radius: float, amount: float = 0.25) -> np.ndarray:
    """A colour lit from the upper left, so foregrounds are not flat (F varies)."""
    d = ((x - (cx - 0.3 * radius)) ** 2 + (y - (cy - 0.3 * radius)) ** 2) ** 0.5 / radius
    light = 1.0 + amount * (0.5 - np.clip(d, 0, 1.5))
    return np.clip(np.array(colour, np.float32) * light[..., None], 0.0, 1.0).astype(np.float32)


def _strands(layers: _Layers, scale: float, rng: np.random.Generator, roots: np.ndarray,
             directions: np.ndarray, lengths: np.ndarray, widths_px: np.ndarray,
             curl: float) -> np.ndarray:
    """Draws thin curved strands; returns their coverage (true sub-pixel alpha)."""
    canvas = layers.canvas()
    steps = 24
    for root, direction, length, width_px in zip(roots, directions, lengths, widths_px):
        angle = np.arctan2(direction[1], direction[0])
        bend = rng.normal(0.0, curl)
        t = np.linspace(0.0, 1.0, steps)
        angles = angle + bend * t + rng.normal(0.0, curl * 0.15, steps).cumsum() / steps
        seg = length / (steps - 1)
        pts = root + np.concatenate(
            [[[0.0, 0.0]], np.cumsum(np.stack([np.cos(angles), np.sin(angles)], 1)[:-1] * seg, 0)])
        thickness = max(1, int(round(width_px * layers.s)))
        cv2.polylines(canvas, [_pts(pts, layers, scale)], False, 255, thickness, cv2.LINE_8, _SHIFT)
    return layers.coverage(canvas)


def _subject_hair(layers: _Layers, rng: np.random.Generator, x: np.ndarray, y: np.ndarray,
                  aspect: float) -> None:
    h = layers.height
    scale = float(min(layers.height, layers.width))
    cx = aspect / 2.0
    # Shoulders leave through the bottom edge, as in most portraits.
    shoulders = _fill_polygon(layers, scale, _ellipse_points(cx, 1.08, 0.36, 0.30))
    layers.add(layers.coverage(shoulders), _shaded((0.16, 0.20, 0.36), x, y, cx, 0.9, 0.4, 0.2))
    neck = _fill_polygon(layers, scale, _rounded_rect(cx - 0.06, 0.55, cx + 0.06, 0.82, 0.02))
    skin = _shaded((0.80, 0.60, 0.48), x, y, cx, 0.45, 0.2)
    layers.add(layers.coverage(neck), skin)
    # Flyaway strands have the colour of the hair they grow from (strands are never
    # wider than a pixel, so no method could observe a different colour of their own).
    hair_colour = _shaded((0.30, 0.19, 0.11), x, y, cx, 0.36, 0.3, 0.12)
    back_hair = _fill_polygon(layers, scale, _ellipse_points(cx, 0.40, 0.19, 0.24))
    layers.add(layers.coverage(back_hair), hair_colour)
    face = _fill_polygon(layers, scale, _ellipse_points(cx, 0.47, 0.13, 0.18))
    layers.add(layers.coverage(face), skin)
    fringe = _fill_polygon(layers, scale, _ellipse_points(cx, 0.33, 0.17, 0.12, start=np.pi,
                                                          end=2 * np.pi))
    layers.add(layers.coverage(fringe), hair_colour)
    # Flyaway strands from the upper outline of the hair, pointing outwards.
    n = 170
    theta = rng.uniform(np.pi * 1.02, np.pi * 1.98, n)
    roots = np.stack([cx + 0.185 * np.cos(theta), 0.40 + 0.235 * np.sin(theta)], 1)
    normals = np.stack([np.cos(theta), np.sin(theta)], 1)
    px = 1.0 / scale
    lengths = rng.uniform(0.04, 0.15, n)
    widths = rng.uniform(0.25, 1.1, n)  # in output pixels: sub-pixel at any size
    coverage = _strands(layers, scale, rng, roots + normals * 2 * px, normals, lengths, widths, 0.9)
    layers.add(coverage, hair_colour)


def _subject_translucent(layers: _Layers, rng: np.random.Generator, x: np.ndarray,
                         y: np.ndarray, aspect: float) -> None:
    scale = float(min(layers.height, layers.width))
    cx = aspect / 2.0
    torso = _fill_polygon(layers, scale, _rounded_rect(cx - 0.17, 0.36, cx + 0.17, 0.95, 0.06))
    head = _fill_polygon(layers, scale, _ellipse_points(cx, 0.25, 0.085, 0.11))
    ivory = _shaded((0.86, 0.78, 0.62), x, y, cx, 0.5, 0.4, 0.2)
    layers.add(layers.coverage(torso), ivory)
    layers.add(layers.coverage(head), _shaded((0.70, 0.50, 0.40), x, y, cx, 0.25, 0.12))
    # The dupatta: a translucent crimson drape across the body, out past its outline.
    drape = np.array([[cx - 0.36, 0.42], [cx + 0.10, 0.38], [cx + 0.34, 0.62],
                      [cx + 0.30, 0.78], [cx - 0.04, 0.60], [cx - 0.32, 0.70]])
    cover = layers.coverage(_fill_polygon(layers, scale, drape))
    # A woven fabric: opacity varies with the weave, at about two pixels per thread.
    weave = 0.38 + 0.07 * np.sin(x * scale * 2.8) * np.sin(y * scale * 2.3)
    crimson = _shaded((0.72, 0.08, 0.22), x, y, cx, 0.55, 0.4, 0.3)
    layers.add((cover * weave).astype(np.float32), crimson)
    # Fringe threads hang from the lower edges of the drape: opaque but sub-pixel wide.
    n = 90
    t = rng.uniform(0.0, 1.0, n)
    a, b = np.array([cx - 0.32, 0.70]), np.array([cx - 0.04, 0.60])
    c, d = np.array([cx - 0.04, 0.60]), np.array([cx + 0.30, 0.78])
    left = t < 0.45
    roots = np.where(left[:, None], a + (b - a) * (t[:, None] / 0.45),
                     c + (d - c) * ((t[:, None] - 0.45) / 0.55))
    down = np.stack([rng.normal(0, 0.15, n), np.ones(n)], 1)
    threads = _strands(layers, scale, rng, roots, down, rng.uniform(0.03, 0.07, n),
                       rng.uniform(0.3, 0.9, n), 0.2)
    layers.add(threads, np.clip(crimson * 0.85, 0, 1))


def _subject_motion_blur(layers: _Layers, rng: np.random.Generator, x: np.ndarray,
                         y: np.ndarray, aspect: float) -> None:
    scale = float(min(layers.height, layers.width))
    cx = aspect / 2.0
    # A still figure, and a ball and a sleeve that moved during the exposure.
    post = _fill_polygon(layers, scale, _rounded_rect(cx - 0.10, 0.30, cx + 0.10, 0.92, 0.04))
    layers.add(layers.coverage(post), _shaded((0.25, 0.22, 0.55), x, y, cx, 0.6, 0.3))
    length = max(3, int(round(0.07 * scale)))
    kernel = np.ones((1, length), np.float32) / length
    for shape, colour in (
        (_ellipse_points(cx + 0.30, 0.35, 0.09, 0.09), (0.85, 0.20, 0.15)),
        (_rounded_rect(cx - 0.42, 0.52, cx - 0.06, 0.62, 0.04), (0.90, 0.62, 0.10)),
    ):
        cover = layers.coverage(_fill_polygon(layers, scale, shape))
        fcol = _shaded(colour, x, y, cx, 0.45, 0.4, 0.3)
        premult = fcol * cover[..., None]
        # Blur alpha and premultiplied colour with the same kernel: that is what the
        # shutter integrates, so the truth stays consistent.
        blurred_a = cv2.filter2D(cover, -1, kernel, borderType=cv2.BORDER_CONSTANT)
        blurred_p = cv2.filter2D(premult, -1, kernel, borderType=cv2.BORDER_CONSTANT)
        layers.add_premultiplied(np.clip(blurred_a, 0, 1), np.clip(blurred_p, 0, 1))


def _subject_product(layers: _Layers, rng: np.random.Generator, x: np.ndarray,
                     y: np.ndarray, aspect: float) -> None:
    scale = float(min(layers.height, layers.width))
    cx = aspect / 2.0
    body = _rounded_rect(cx - 0.14, 0.40, cx + 0.14, 0.90, 0.05)
    shoulder = np.array([[cx - 0.14, 0.45], [cx - 0.05, 0.30], [cx + 0.05, 0.30],
                         [cx + 0.14, 0.45]])
    neck = _rounded_rect(cx - 0.045, 0.16, cx + 0.045, 0.33, 0.01)
    glass = np.clip(np.array([0.10, 0.42, 0.26], np.float32)
                    * (1.0 + 0.6 * np.exp(-((x - (cx - 0.07)) / 0.03) ** 2))[..., None], 0, 1)
    for shape in (body, shoulder, neck):
        layers.add(layers.coverage(_fill_polygon(layers, scale, shape)), glass)
    label = _rounded_rect(cx - 0.14, 0.55, cx + 0.14, 0.75, 0.005)
    layers.add(layers.coverage(_fill_polygon(layers, scale, label)),
               np.broadcast_to(np.array([0.88, 0.82, 0.70], np.float32), glass.shape).copy())
    cap = _rounded_rect(cx - 0.055, 0.11, cx + 0.055, 0.18, 0.012)
    layers.add(layers.coverage(_fill_polygon(layers, scale, cap)),
               _shaded((0.55, 0.45, 0.20), x, y, cx, 0.14, 0.06))


_SUBJECT_FUNCS: dict[str, Callable[..., None]] = {
    "hair": _subject_hair,
    "translucent": _subject_translucent,
    "motion_blur": _subject_motion_blur,
    "product": _subject_product,
}


def make_case(subject: str, backdrop: str, width: int = 1152, height: int = 864, seed: int = 0,
              supersample: int = 8, noise: float = 1.0) -> SyntheticCase:
    """Renders one subject on one backdrop; `noise` is the sensor noise in 8-bit levels."""
    if subject not in _SUBJECT_FUNCS:
        raise ValueError(f"unknown subject {subject!r}")
    rng = np.random.default_rng([seed, SUBJECTS.index(subject), BACKDROPS.index(backdrop)])
    background = _backdrop(backdrop, height, width)
    layers = _Layers(height, width, supersample)
    x, y = _grid(height, width)
    aspect = width / min(height, width)
    _SUBJECT_FUNCS[subject](layers, rng, x, y, aspect)
    alpha = np.clip(layers.alpha, 0.0, 1.0)
    alpha[alpha < 1e-4] = 0.0
    alpha[alpha > 1.0 - 1e-4] = 1.0
    foreground = layers.foreground(background)
    linear = foreground * alpha[..., None] + background * (1.0 - alpha[..., None])
    if noise > 0:
        linear = linear + rng.normal(0.0, noise / 255.0, linear.shape).astype(np.float32)
    image = np.clip(np.round(linear * 255.0), 0, 255).astype(np.uint8)
    return SyntheticCase(f"{subject}/{backdrop}", subject, backdrop, image,
                         alpha.astype(np.float32), foreground, background)


def all_cases(width: int = 1152, height: int = 864, seed: int = 0, supersample: int = 8,
              subjects: tuple[str, ...] = SUBJECTS,
              backdrops: tuple[str, ...] = BACKDROPS) -> Iterator[SyntheticCase]:
    """Every subject on every backdrop, generated lazily (each 1 MP case is ~60 MB)."""
    for subject in subjects:
        for backdrop in backdrops:
            yield make_case(subject, backdrop, width, height, seed, supersample)


def new_background(height: int, width: int) -> np.ndarray:
    """A saturated backdrop unlike every test backdrop, for measuring halos on re-composite."""
    x, y = _grid(height, width)
    xn, yn = x / x.max(), y / y.max()
    green = np.array([0.10, 0.62, 0.22], np.float32)
    magenta = np.array([0.70, 0.12, 0.55], np.float32)
    t = (0.6 * xn + 0.4 * yn)[..., None]
    return (green * (1 - t) + magenta * t).astype(np.float32)


def checkerboard_scene(height: int, width: int, cell: int = 16, seed: int = 0) -> np.ndarray:
    """A busy, non-plain backdrop (texture everywhere), which the classical engine must refuse."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    board = ((x // cell + y // cell) % 2).astype(np.float32)
    colours = rng.uniform(0.1, 0.9, (2, 3)).astype(np.float32)
    image = colours[0] * board[..., None] + colours[1] * (1 - board[..., None])
    image += rng.normal(0, 0.08, image.shape).astype(np.float32)
    return np.clip(np.round(image * 255), 0, 255).astype(np.uint8)
