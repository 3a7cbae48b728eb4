"""What a render does with the shadow the matting stage separated: the brief's policy.

* ``kept``: a soft contact shadow is carried onto the new scene as a multiplier, so the
  subject stands on the new floor instead of floating over it;
* ``dropped_hard``: a hard, directional cast shadow is dropped: it belongs to the old
  studio's spotlight and would fight the new scene's light;
* ``none_found``: there was no shadow to keep;
* ``not_requested``: ``preserve_shadow`` was false; nothing of the old shadow remains
  (the matte is the subject alone, so the old shadow is not in it either).

The response states the decision and the shadow's strength (its deepest darkening).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gpu_worker.matting.base import Matte

STATES = ("kept", "dropped_hard", "none_found", "not_requested")


@dataclass(frozen=True)
class ShadowDecision:
    state: str
    strength: float  # 0..1 darkening of the separated shadow's deepest part
    multiplier: np.ndarray | None  # HxW float32 to multiply the new background by

    def as_facts(self) -> dict:
        return {"state": self.state, "strength": round(float(self.strength), 3)}


def decide(matte: Matte, preserve_shadow: bool) -> ShadowDecision:
    strength = float(matte.facts.get("shadow_strength", 0.0)) if matte.shadow is not None else 0.0
    if not preserve_shadow:
        return ShadowDecision("not_requested", strength, None)
    if matte.shadow is None or strength <= 0.0:
        return ShadowDecision("none_found", 0.0, None)
    if matte.shadow_hard:
        return ShadowDecision("dropped_hard", strength, None)
    return ShadowDecision("kept", strength, matte.shadow)
