"""Geometry between the source image and the scene model's canvas.

The scene is generated at about one megapixel in the output's aspect ratio (what the
models were trained at, and what bounds the cost), then scaled back to the source size.
The subject, dilated by a few pixels, is kept out of the mask so the model never paints
its fringe; what ends up behind the fringe is the generated scene extended inwards.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

NEUTRAL_GREY = 0.5  # zero in the VAE's -1..1 input range: no colour, no brightness bias
ALPHA_PRESENT = 0.02  # alpha above this counts as subject when building the mask


def working_size(height: int, width: int, pixels: int, multiple: int = 8) -> tuple[int, int]:
    """(height, width) with about ``pixels`` pixels, the source's aspect ratio, multiples of 8.

    Also used for sources smaller than the canvas: the models paint badly below their
    training size, and the background is scaled to the source size afterwards anyway.
    """
    if height <= 0 or width <= 0:
        raise ValueError("image has no pixels")
    scale = math.sqrt(pixels / (height * width))
    h = max(multiple, int(round(height * scale / multiple)) * multiple)
    w = max(multiple, int(round(width * scale / multiple)) * multiple)
    return h, w


def resize_alpha(alpha: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    if alpha.shape == (h, w):
        return alpha.astype(np.float32, copy=False)
    shrinking = h * w < alpha.shape[0] * alpha.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return np.clip(cv2.resize(alpha.astype(np.float32), (w, h), interpolation=interpolation), 0.0, 1.0)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Float 0..1 HxWx3 at ``size``; area averaging down, bicubic up."""
    h, w = size
    source = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
    if source.shape[:2] == (h, w):
        return source
    shrinking = h * w < source.shape[0] * source.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    return np.clip(cv2.resize(source, (w, h), interpolation=interpolation), 0.0, 1.0)


def keep_region(alpha_working: np.ndarray, dilate_px: int) -> np.ndarray:
    """Boolean HxW: the subject (any alpha) grown by ``dilate_px``; the model leaves it alone."""
    present = (alpha_working > ALPHA_PRESENT).astype(np.uint8)
    if dilate_px > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate_px + 1, 2 * dilate_px + 1))
        present = cv2.dilate(present, kernel)
    return present.astype(bool)


def repaint_mask(keep: np.ndarray) -> np.ndarray:
    """uint8 HxW for the inpainting pipeline: 255 (white) = repaint = everything outside ``keep``."""
    return np.where(keep, 0, 255).astype(np.uint8)


def neutral_canvas(size: tuple[int, int]) -> np.ndarray:
    """The image handed to the model: uniform grey.

    The subject area is grey so its colours cannot leak into the scene; the rest is
    grey too, because with strength just under 1 a little of the input survives into
    the first step, and the old backdrop and its shadow must not (the kept shadow is
    multiplied on later, and would otherwise be doubled).
    """
    h, w = size
    return np.full((h, w, 3), NEUTRAL_GREY, np.float32)


def fill_from_known(image: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Fills the pixels where ``known`` is False from the known ones around them (push-pull).

    A pyramid of weighted averages: each unknown pixel takes the colour of the nearest
    known surroundings at the coarsest scale that has any. Linear in the pixel count,
    so it is cheap at the working size; known pixels are returned unchanged.
    """
    if known.all():
        return image.astype(np.float32, copy=True)
    if not known.any():
        return np.full_like(image, image.mean() if image.size else 0.0, dtype=np.float32)
    weight = known.astype(np.float32)
    channels = image.shape[2] if image.ndim == 3 else 1
    values = image.astype(np.float32).reshape(image.shape[0], image.shape[1], channels)
    sums = [values * weight[..., None]]
    weights = [weight]
    while min(weights[-1].shape) > 1 and weights[-1].min() <= 0:
        h, w = weights[-1].shape
        size = (max(1, (w + 1) // 2), max(1, (h + 1) // 2))
        # INTER_AREA of a product and of its weight: a weighted mean at half size.
        s = cv2.resize(sums[-1], size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0], channels)
        wt = cv2.resize(weights[-1], size, interpolation=cv2.INTER_AREA)
        sums.append(s)
        weights.append(wt)
    level = sums[-1] / np.maximum(weights[-1], 1e-8)[..., None]
    for s, wt in zip(reversed(sums[:-1]), reversed(weights[:-1])):
        h, w = wt.shape
        coarse = cv2.resize(level, (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, channels)
        # A cell a sixteenth covered already counts as known: the fill stays local
        # instead of averaging in far-away colours from coarser levels.
        cover = np.clip(wt * 16.0, 0.0, 1.0)[..., None]
        level = cover * (s / np.maximum(wt, 1e-8)[..., None]) + (1.0 - cover) * coarse
    out = np.where(known[..., None], values, level)
    return out.reshape(image.shape).astype(np.float32)


def to_source_size(background: np.ndarray, height: int, width: int) -> np.ndarray:
    """Scales the working-size scene to the source resolution, float32 0..1."""
    if background.shape[:2] == (height, width):
        return np.clip(background, 0.0, 1.0).astype(np.float32)
    shrinking = height * width < background.shape[0] * background.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    scaled = cv2.resize(background.astype(np.float32), (width, height), interpolation=interpolation)
    return np.clip(scaled, 0.0, 1.0, out=scaled)
