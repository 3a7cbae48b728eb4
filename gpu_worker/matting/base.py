"""The matting stages' shared types and the small interfaces each stage implements.

A matte is made in four stages, each swappable and tested on its own:

1. an `AlphaEstimator` (trimap-free: a network, or the classical backdrop solver) gives a
   soft alpha at a bounded working resolution;
2. a band refiner fixes that alpha in the uncertain band around the subject's edge;
3. an upsampler takes it to the full source resolution, guided by the source image;
4. a foreground estimator recovers the subject's own colour in the edge band, so no
   colour of the old backdrop survives in semi-transparent pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import cv2
import numpy as np
from scipy import ndimage


@dataclass
class Estimate:
    """What an alpha estimator knows at the working resolution."""

    alpha: np.ndarray  # HxW float32 0..1
    # Pixels the estimator is sure are background (the classical engine's backdrop
    # test); None when it has no such knowledge beyond alpha itself.
    known_background: np.ndarray | None = None
    # HxWx3 float32 colour of the backdrop behind the subject, when the estimator has
    # modelled it (the classical engine): foreground estimation then solves F against
    # it instead of guessing the backdrop from the neighbourhood.
    background: np.ndarray | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    # HxW float32 shadow ratio S on the backdrop (1 = no shadow), separated from the
    # subject (`shadow_layer`), or None when the estimator found or models none.
    shadow: np.ndarray | None = None
    # The shadow is a hard cast shadow (the brief drops those) rather than a soft one.
    shadow_hard: bool = False
    # HxW bool: pixels whose alpha the estimator read along a colour line of its own (a
    # see-through panel); the refiner's projection on the subject's colour leaves them.
    line_solved: np.ndarray | None = None


class AlphaEstimator(Protocol):
    """Stage 1: soft alpha for a working-resolution RGB image (uint8 HxWx3)."""

    name: str

    def __call__(self, image: np.ndarray) -> Estimate: ...


class Refiner(Protocol):
    """Stage 2: the estimate's alpha fixed in the edge band (HxW float32 0..1)."""

    def __call__(self, image: np.ndarray, estimate: Estimate) -> np.ndarray: ...


@dataclass
class Matte:
    """The finished matte at the source's full resolution."""

    # HxW float32 in multiples of 1/255: exactly what the 8-bit matte PNG stores, so the
    # file a client downloads reproduces the composite we made.
    alpha: np.ndarray
    # HxWx3 float32 0..1: estimated in the edge band, the source colour elsewhere.
    foreground: np.ndarray
    # HxW bool: the fractional pixels, where the foreground was estimated.
    band: np.ndarray
    facts: dict[str, Any] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)
    # HxW float32 shadow ratio S at full resolution (1 = none), separated from the
    # subject's alpha; None when no shadow was found. `shadow_policy` decides its use.
    shadow: np.ndarray | None = None
    shadow_hard: bool = False

    @property
    def alpha_u8(self) -> np.ndarray:
        return np.round(self.alpha * 255.0).astype(np.uint8)


def working_size(height: int, width: int, max_pixels: int) -> tuple[int, int]:
    """The largest (height, width) with the same aspect and at most `max_pixels` pixels."""
    if height * width <= max_pixels:
        return height, width
    scale = (max_pixels / float(height * width)) ** 0.5
    return max(1, int(height * scale)), max(1, int(width * scale))


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Area-averaged downscale (no aliasing of hair), bilinear when enlarging."""
    if image.shape[:2] == (height, width):
        return image
    shrinking = height * width < image.shape[0] * image.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)


def fractional(alpha: np.ndarray) -> np.ndarray:
    return (alpha > 0.0) & (alpha < 1.0)


def quantize_alpha(alpha: np.ndarray) -> np.ndarray:
    """Rounds alpha to the 256 levels the matte PNG can hold (float32 result)."""
    return (np.round(np.clip(alpha, 0.0, 1.0) * 255.0) / 255.0).astype(np.float32)


def bounding_box(mask: np.ndarray, margin: int) -> tuple[slice, slice] | None:
    """The mask's bounding box grown by `margin` and clipped to the image; None if empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    h, w = mask.shape
    return (slice(max(0, rows[0] - margin), min(h, rows[-1] + 1 + margin)),
            slice(max(0, cols[0] - margin), min(w, cols[-1] + 1 + margin)))


def drop_small(mask: np.ndarray, min_size: int, eight: bool = False) -> np.ndarray:
    """`mask` without its connected components smaller than `min_size` pixels (noise
    specks), 4- or 8-connected."""
    structure = np.ones((3, 3), bool) if eight else None
    labels, count = ndimage.label(mask, structure=structure)
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_size
    keep[0] = False
    return keep[labels]


def nearest_values(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """`values` (HxW or HxWxC) with every pixel taking the value of the nearest `known`
    pixel (exact Euclidean nearest, so nothing is averaged in from farther away)."""
    _, (rows, cols) = ndimage.distance_transform_edt(~known, return_indices=True)
    return values[rows, cols]


def smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    """0 below edge0, 1 above edge1, a smooth cubic between."""
    t = np.clip((x - edge0) / max(edge1 - edge0, 1e-6), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    if radius <= 0:
        return mask
    return cv2.dilate(mask.astype(np.uint8), disk(radius)).astype(bool)


def erode(mask: np.ndarray, radius: int) -> np.ndarray:
    if radius <= 0:
        return mask
    # Outside the image counts as "inside the mask" so a subject touching the frame
    # edge is not eroded from that side (portraits leave through the bottom).
    return cv2.erode(mask.astype(np.uint8), disk(radius), borderType=cv2.BORDER_REPLICATE
                     ).astype(bool)
