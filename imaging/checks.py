"""``manage.py check --deploy`` warns when the fetcher may reach private addresses.

FETCH_ALLOW_PRIVATE_ADDRESSES exists so a developer can fetch images from a server on
their own machine. Left on in production it turns image_url into a way to read cloud
metadata credentials and internal services, so a deploy must not pass silently with it.
Registered when this module is imported (from ``ImagingConfig.ready``).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks

PRIVATE_ADDRESSES_ALLOWED = "imaging.W001"


@checks.register(checks.Tags.security, deploy=True)
def check_fetch_private_addresses(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    if not getattr(settings, "FETCH_ALLOW_PRIVATE_ADDRESSES", False):
        return []
    return [
        checks.Warning(
            "FETCH_ALLOW_PRIVATE_ADDRESSES is on: image_url may point at loopback, private "
            "and link-local addresses, including cloud metadata endpoints.",
            hint="Unset FETCH_ALLOW_PRIVATE_ADDRESSES outside local development.",
            id=PRIVATE_ADDRESSES_ALLOWED,
        )
    ]
