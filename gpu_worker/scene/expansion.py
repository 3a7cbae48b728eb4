"""Object expansion: the scene model growing the product beyond its outline.

It is the known failure of inpainting around a fixed subject: the model, seeing a
silhouette, continues it (a taller bottle, a second handle, a shadow-coloured plinth
fused to the base). Our composite keeps the subject's own pixels exact, but a growth
painted just outside the outline still reads as part of the product. It is measured the
way a customer would see it: the finished composite is matted again, and the area the
matte gained beyond the input matte, as a share of the subject's area, is the figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from gpu_worker.errors import RenderError

MatteFn = Callable[[np.ndarray], np.ndarray]  # HxWx3 uint8 -> HxW float32 alpha 0..1


@dataclass(frozen=True)
class ExpansionCheck:
    """``growth`` is None when it could not be measured; ``skipped`` then says why."""

    growth: float | None
    area_ratio: float | None
    skipped: str | None = None


def compose_for_check(alpha: np.ndarray, foreground: np.ndarray, background: np.ndarray) -> np.ndarray:
    """The composite as the customer will get it, at working size, as 8-bit for the matte."""
    a = alpha[..., None]
    image = a * foreground + (1.0 - a) * background
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)


def measure_expansion(composite: np.ndarray, input_alpha: np.ndarray, matte_fn: MatteFn) -> ExpansionCheck:
    """Re-mattes ``composite`` and compares the subject's area with ``input_alpha``'s.

    A matting engine that refuses the image (the classical engine refuses busy
    backdrops, and a generated scene is rarely plain) means the figure is unknown, not
    that the render failed: the check is skipped with the engine's code.
    """
    area = float(input_alpha.sum())
    if area < 1.0:
        return ExpansionCheck(None, None, "no_subject")
    try:
        output_alpha = np.asarray(matte_fn(composite), dtype=np.float32)
    except RenderError as exc:
        return ExpansionCheck(None, None, exc.code)
    if output_alpha.shape != input_alpha.shape:
        raise ValueError(f"matte_fn returned {output_alpha.shape}, expected {input_alpha.shape}")
    growth = float(np.clip(output_alpha - input_alpha, 0.0, 1.0).sum()) / area
    return ExpansionCheck(growth=growth, area_ratio=float(output_alpha.sum()) / area)


def retry_seed(seed: int, attempt: int) -> int:
    """The seed of attempt ``attempt`` (0 = the requested one); deterministic, within int63."""
    return (seed + attempt * 0x9E3779B97F4A7C15) % (1 << 63)
