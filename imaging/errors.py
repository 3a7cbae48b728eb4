"""Error codes of the image input path: fetching ``image_url`` and checking the image.

Registered at import so the docs page and the OpenAPI schema list them. Every one of
them is raised before any credits are reserved.
"""

from __future__ import annotations

from platform_site.api_errors import register

IMAGE_URL_FORBIDDEN = register(
    "image_url_forbidden", 422, "invalid_request_error",
    "`image_url` is not allowed: not http(s), has user info or a non-default port, or its host "
    "is or resolves to an address that is not public (loopback, private, link-local, "
    "multicast, reserved...), or a redirect went there or from https to http.",
)
IMAGE_UNREACHABLE = register(
    "image_unreachable", 422, "invalid_request_error",
    "`image_url` could not be fetched: the host did not resolve, the connection failed or "
    "timed out, TLS failed, there were too many redirects, or the server answered with a "
    "non-2xx status. The message says which.",
)
IMAGE_TOO_LARGE = register(
    "image_too_large", 413, "invalid_request_error",
    "The image is too large: more bytes than the download limit, or more pixels or a longer "
    "side than the image limits. Checked before the pixels are decoded.",
)
UNSUPPORTED_IMAGE = register(
    "unsupported_image", 415, "invalid_request_error",
    "The image is not JPEG, PNG, WebP, HEIC or AVIF, decided from its bytes, not from its Content-Type "
    "or file name.",
)
INVALID_IMAGE = register(
    "invalid_image", 422, "invalid_request_error",
    "The image is empty, truncated or corrupt and cannot be decoded.",
)
STORAGE_UNAVAILABLE = register(
    "storage_unavailable", 503, "api_error",
    "File storage could not be read or written right now; nothing was charged. Retry shortly.",
)
