"""The render page's result, in words: the public result parts as a few readable rows.

The rows are built from ``imaging.serializers.public_result`` (what the API answers), so
the page can never show a customer more than the API does. The worker's internal facts
(thresholds, attempts, sub-stage timings) are offered to staff only, as formatted JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from imaging.models import Render
from imaging.serializers import TIMING_STAGES, public_result, public_timings

SHADOW_WORDS = {
    "kept": "soft contact shadow kept on the new scene",
    "dropped_hard": "hard cast shadow found and dropped (it would fight the new light)",
    "none_found": "no shadow in the photo",
    "not_requested": "not kept (preserve_shadow was false)",
}
LIGHT_WORDS = {"left": "from the left", "right": "from the right", "above": "from above",
               "front": "from the front"}


@dataclass(frozen=True)
class ResultRow:
    label: str
    value: str
    testid: str


def _percent(share: float | None) -> str:
    if share is None:
        return "—"
    text = f"{share * 100:.2f}".rstrip("0").rstrip(".")
    return f"{text}%"


def _milliseconds(value: int) -> str:
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value} ms"


def result_rows(render: Render) -> list[ResultRow]:
    """Scene, subject, exactness, shadow, light and timings, one row each (none until done)."""
    parts = public_result(render)
    rows: list[ResultRow] = []
    scene = parts["scene"]
    if scene:
        rows.append(ResultRow("Scene", f"{scene['engine'] or 'unknown'} engine, "
                                       f"“{scene['prompt']}”, seed {scene['seed']}", "result-scene"))
    subject = parts["subject"]
    if subject:
        if subject["bbox"]:
            x0, y0, x1, y1 = subject["bbox"]
            where = f"{x1 - x0}×{y1 - y0} px at ({x0}, {y0})"
        else:
            where = "not found"
        rows.append(ResultRow("Subject", f"{where}, {_percent(subject['coverage'])} of the image",
                              "result-subject"))
    exact = parts["exactness"]
    if exact:
        rows.append(ResultRow(
            "Exact pixels",
            f"{exact['exact_pixels']:,} of {exact['opaque_pixels']:,} fully opaque subject pixels "
            f"identical to the source ({_percent(exact['share'])}), measured on the {render.output_format} file",
            "result-exactness"))
    shadow = parts["shadow"]
    if shadow:
        strength = f", strength {shadow['strength']:.2f}" if shadow["state"] in ("kept", "dropped_hard") else ""
        rows.append(ResultRow("Shadow", SHADOW_WORDS[shadow["state"]] + strength, "result-shadow"))
    light = parts["light"]
    if light and light["direction"]:
        confidence = (f" (confidence {light['confidence']:.2f})" if light["confidence"] is not None else "")
        rows.append(ResultRow("Light", LIGHT_WORDS[light["direction"]] + confidence, "result-light"))
    timings = public_timings(render)
    if timings:
        stages = [f"{name} {_milliseconds(timings[name])}" for name in TIMING_STAGES
                  if name in timings and name != "total"]
        total = f"{_milliseconds(timings['total'])} in all" if "total" in timings else ""
        rows.append(ResultRow("Worker time", ", ".join(filter(None, [total, " · ".join(stages)])),
                              "result-timings"))
    return rows


def staff_diagnostics(render: Render) -> str:
    """Everything else the worker reported, as indented JSON ("" when it reported nothing)."""
    facts: dict[str, Any] = {}
    if render.diagnostics:
        facts["diagnostics"] = render.diagnostics
    if render.engine:
        facts["engine"] = render.engine
    if render.failed_stage:
        facts["failed_stage"] = render.failed_stage
    if render.error_detail:
        facts["error_detail"] = render.error_detail
    return json.dumps(facts, indent=2, sort_keys=True, default=str) if facts else ""
