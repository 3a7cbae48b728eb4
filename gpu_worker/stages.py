"""The scene stage's interface, and the plain generator used until scene generation lands.

The scene generator (part 2: diffusion inpainting around the subject, kept shadow,
matched light) plugs into `ReplaceBackgroundPipeline` through `SceneGenerator`. It
receives the full-resolution source, alpha and estimated foreground and returns a
full-resolution background and an optional shadow multiplier; our composite then puts
the exact subject on top, so nothing the generator paints can reach the subject.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass
class SceneRequest:
    image: np.ndarray  # HxWx3 uint8 source, full resolution
    alpha: np.ndarray  # HxW float32 0..1, full resolution (8-bit levels)
    foreground: np.ndarray  # HxWx3 float32 0..1 estimated subject colour
    prompt: str
    seed: int
    # Carry a shadow of the generator's own: the pipeline asks only when the client
    # wants one and the matting stage has not separated the photo's shadow itself.
    preserve_shadow: bool


@dataclass
class Scene:
    background: np.ndarray  # HxWx3 float32 0..1, full resolution
    shadow: np.ndarray | None  # HxW float32 multiplier 0..1 (1 = no shadow), or None
    # JSON-able facts for the render result: scene_generated, light_direction,
    # expansion, attempts, ...
    facts: dict[str, Any] = field(default_factory=dict)


class SceneGenerator(Protocol):
    name: str

    def __call__(self, request: SceneRequest) -> Scene: ...


@dataclass
class PlainSceneGenerator:
    """A neutral light-grey studio background, no shadow: renders before scene generation.

    The background is a read-only broadcast view, not a 288 MB array at 24 MP.
    """

    name: str = "plain"
    colour: tuple[float, float, float] = (0.92, 0.92, 0.92)

    def __call__(self, request: SceneRequest) -> Scene:
        height, width = request.image.shape[:2]
        background = np.broadcast_to(np.asarray(self.colour, np.float32), (height, width, 3))
        return Scene(background=background, shadow=None, facts={"scene_generated": False})
