"""Who may see what: owners see their own renders, staff see the staff pages.

Another user's render is answered 404, never 403, so its id cannot be probed for
existence. Staff pages answer 403 to signed-in users who are not staff (they know
the page exists; they may not read it) and send strangers to sign in.
"""

from __future__ import annotations

from functools import wraps
from typing import Any, Callable

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse

from imaging.models import Render

View = Callable[..., HttpResponse]


def owned_render(request: HttpRequest, public_id: str) -> Render:
    """The signed-in user's render with this public id, or 404 (also for other users' renders)."""
    render = Render.objects.filter(public_id=public_id, user_id=request.user.pk).select_related("api_key").first()
    if render is None:
        raise Http404("No such render.")
    return render


def staff_required(view: View) -> View:
    """login_required, then 403 for anyone who is not staff."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_staff:
            raise PermissionDenied("Staff only.")
        return view(request, *args, **kwargs)

    return login_required(wrapper)
