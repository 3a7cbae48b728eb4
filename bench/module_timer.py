"""Wall time per named module call, with CUDA synchronised around each call.

Kernels launch asynchronously: without a synchronise before and after, a UNet call
"takes" microseconds and the next CPU stage absorbs its cost. Shared by the scene and
GPU-cost benchmarks.
"""

from __future__ import annotations

import time
from collections import defaultdict

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class ModuleTimer:
    """Accumulates wall time per named call: ``wrap(name, owner, "forward")``."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.times: dict[str, list[float]] = defaultdict(list)
        self._originals: list[tuple[object, str, object]] = []

    def wrap(self, name: str, owner, attribute: str) -> None:
        original = getattr(owner, attribute)
        self._originals.append((owner, attribute, original))

        def timed(*args, **kwargs):
            synchronize(self.device)
            start = time.perf_counter()
            result = original(*args, **kwargs)
            synchronize(self.device)
            self.times[name].append(time.perf_counter() - start)
            return result

        setattr(owner, attribute, timed)

    def unwrap(self) -> None:
        for owner, attribute, original in reversed(self._originals):
            setattr(owner, attribute, original)
        self._originals.clear()

    def reset(self) -> None:
        self.times.clear()
