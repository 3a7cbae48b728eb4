"""Serving stored outputs and mattes through signed, expiring links (local storage).

With S3 the render object carries the bucket's presigned URLs instead and this view
is not involved. The signature is the credential, so no API key is needed: links
work in an ``<img>`` tag or a browser for as long as they are valid.
"""

from __future__ import annotations

import logging
import time

from django.core.files.storage import default_storage
from django.http import FileResponse
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.views import APIView

from imaging import signed_urls, storage_keys
from imaging.schema import signed_file_schema
from platform_site.api_errors import ApiError

log = logging.getLogger(__name__)


class SignedFileView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @signed_file_schema
    def get(self, request: Request, folder: str, name: str) -> FileResponse:
        key = f"{folder}/{name}"
        # The storage-key grammar first: a key we could never have written is not looked up.
        if not storage_keys.is_servable_key(key):
            raise ApiError("not_found", "No such file.")
        try:
            signed_urls.verify(key, request.query_params.get("expires"),
                               request.query_params.get("signature"))
        except signed_urls.SignatureError as exc:
            raise ApiError(exc.code, exc.message) from None
        content_type = storage_keys.content_type_for(key)
        if not storage_keys.is_servable(key) or content_type is None or not signed_urls.serves_locally():
            raise ApiError("not_found", "No such file.")
        try:
            handle = default_storage.open(key, "rb")
        except FileNotFoundError:
            # Signed but gone: deleted by the retention command.
            raise ApiError("not_found", "This file is no longer stored.") from None
        except OSError:
            # Stored but unreadable (permissions, a shared disk away): ours to fix.
            log.exception("signed file %s could not be opened", key)
            raise ApiError("storage_unavailable") from None
        response = FileResponse(handle, content_type=content_type)
        response["X-Content-Type-Options"] = "nosniff"
        remaining = max(0, int(request.query_params["expires"]) - int(time.time()))
        response["Cache-Control"] = f"private, max-age={remaining}"
        response["Content-Disposition"] = f'inline; filename="{key.rsplit("/", 1)[-1]}"'
        return response
