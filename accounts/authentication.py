"""DRF authentication by API key: ``Authorization: Bearer <key>``."""

from __future__ import annotations

from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from accounts import keys
from accounts.models import ApiKey, User

MALFORMED = (
    "The API key is malformed: check that it was copied whole, "
    "as `Authorization: Bearer pxl_live_…`."
)
REJECTED = "The API key is unknown or has been revoked."


class ApiKeyAuthentication(BaseAuthentication):
    """Sets ``request.user`` to the key's owner and ``request.auth`` to the ApiKey.

    No header (or another scheme) means "not authenticated", which the project's
    exception handler turns into 401 ``missing_api_key``; a Bearer header with a bad
    key raises AuthenticationFailed, 401 ``invalid_api_key``. Both carry a
    ``WWW-Authenticate`` challenge, and because ``authenticate_header`` returns one,
    DRF answers 401 rather than 403.
    """

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[User, ApiKey] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword.lower().encode():
            return None
        if len(parts) != 2:
            raise AuthenticationFailed(MALFORMED)
        try:
            raw = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise AuthenticationFailed(MALFORMED) from None
        if not keys.is_well_formed(raw):
            raise AuthenticationFailed(MALFORMED)
        key = keys.authenticate_key(raw)
        if key is None:
            raise AuthenticationFailed(REJECTED)
        keys.record_use(key)
        return key.user, key

    def authenticate_header(self, request: Request) -> str:
        return f'{self.keyword} realm="api"'
