"""Marks the navigation link of the page being shown (``aria-current="page"``)."""

from __future__ import annotations

from django import template
from django.utils.safestring import SafeString, mark_safe

register = template.Library()


@register.simple_tag(takes_context=True)
def nav_current(context: template.Context, path: str, exact: bool = False) -> SafeString:
    """`` aria-current="page"`` when the request is for ``path`` (or below it unless exact).

    Screen readers announce the current page from this attribute, and the stylesheet
    highlights the link from it, so there is one source of truth for both.
    """
    request = context.get("request")
    if request is None:
        return mark_safe("")
    here = request.path == path if exact else request.path.startswith(path)
    return mark_safe(' aria-current="page"' if here else "")
