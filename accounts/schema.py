"""Tells drf-spectacular how API keys authenticate, so the OpenAPI schema says "Bearer"."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": f"{settings.API_KEY_PREFIX}…",
            "description": (
                "An API key from the dashboard's Keys page, sent as "
                "`Authorization: Bearer <key>`."
            ),
        }
