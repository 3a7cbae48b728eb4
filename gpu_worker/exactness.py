"""How many fully opaque subject pixels of this call's encoded output equal the source.

The product promises that the subject's pixels are kept exactly. The composite copies
them (see `gpu_worker.composite`), but what the customer downloads is the *encoded*
file, so the promise is measured there: the bytes just written are decoded again and
every pixel whose alpha is 255 is compared with the source, bit for bit. PNG and
lossless WebP give a share of 1.0; JPEG gives what its quantisation leaves (usually
well under 1), and the response says so instead of the docs having to.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

# Rows compared at a time: bounds the boolean temporaries at 24 MP.
_STRIP_ROWS = 1024


def measure_exactness(source: np.ndarray, alpha: np.ndarray, encoded: bytes) -> dict[str, Any]:
    """{opaque_pixels, exact_pixels, share}: share is None when no pixel is fully opaque.

    source: HxWx3 uint8 input; alpha: HxW uint8 matte the composite used; encoded: the
    output file's bytes.
    """
    with Image.open(io.BytesIO(encoded)) as picture:
        picture.load()
        decoded = np.asarray(picture.convert("RGB") if picture.mode != "RGB" else picture)
    if decoded.shape != source.shape:
        raise ValueError(f"encoded output is {decoded.shape}, source is {source.shape}")
    opaque_total = exact_total = 0
    for top in range(0, source.shape[0], _STRIP_ROWS):
        rows = slice(top, top + _STRIP_ROWS)
        opaque = alpha[rows] == 255
        same = np.all(decoded[rows] == source[rows], axis=-1)
        opaque_total += int(np.count_nonzero(opaque))
        exact_total += int(np.count_nonzero(same & opaque))
    share = round(exact_total / opaque_total, 6) if opaque_total else None
    return {"opaque_pixels": opaque_total, "exact_pixels": exact_total, "share": share}
