"""Small formatting helpers for the console's pages (no template tag library needed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest

from imaging.dashboard.media import RenderLinks, duration_seconds, links_for
from imaging.models import Render


def seconds(value: float | None) -> str:
    """1.2 s, 48 s, 3 min 05 s; an em dash for no value."""
    if value is None:
        return "—"
    if value < 10:
        return f"{value:.1f} s"
    if value < 60:
        return f"{value:.0f} s"
    minutes, rest = divmod(int(round(value)), 60)
    return f"{minutes} min {rest:02d} s"


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} %"


@dataclass(frozen=True)
class RenderRow:
    """A render with what a list or a page shows about it."""

    render: Render
    links: RenderLinks
    duration: str

    @property
    def source(self) -> str:
        if self.render.api_key_id is None:
            return "Playground"
        key = self.render.api_key
        return f"API key “{key.name}” ({key.masked})" if key is not None else "API"


def render_rows(renders: Any, request: HttpRequest) -> list[RenderRow]:
    return [RenderRow(r, links_for(r, request), seconds(duration_seconds(r))) for r in renders]
