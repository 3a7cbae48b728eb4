"""Error codes of the render lifecycle, registered in the API's one registry.

Two kinds live here:

* Request errors, answered as HTTP errors before or instead of a render
  (idempotency conflicts, signed-URL refusals).
* Render failure codes. An asynchronous outcome is not an HTTP error: the code is
  stored on the render (``status: "failed"``, ``error: {code, message}``) and
  ``GET /v1/renders/{id}`` answers 200 with it. Only when a render fails inside the
  synchronous window of ``POST /v1/image/replace-background`` does the POST itself
  answer with the error shape, at the status registered here, and with the failed
  render object beside it (``{"error": {...}, "render": {...}}``) so the client still
  learns the id. A failed render never costs credits.
"""

from __future__ import annotations

from platform_site.api_errors import REGISTRY, register

IDEMPOTENCY_KEY_REUSED = register(
    "idempotency_key_reused", 422, "idempotency_error",
    "This Idempotency-Key was used with a different request body in the last 24 hours.",
)
IDEMPOTENCY_KEY_IN_USE = register(
    "idempotency_key_in_use", 409, "idempotency_error",
    "A request with this Idempotency-Key is still being processed; retry after it ends.",
)
RENDER_FAILED = register(
    "render_failed", 500, "render_error",
    "The render failed for a reason on our side; nothing was charged.",
)
MODEL_UNAVAILABLE = register(
    "model_unavailable", 503, "render_error",
    ("This scene prompt needs the diffusion model, which is not installed on the GPU workers; "
     "nothing was charged. Studio prompts work without it (for example \"pure white background\" "
     "or \"soft grey paper sweep\"). To paint other scenes, install the weights on the worker "
     "with `python -m gpu_worker fetch-models` (see the README)."),
)
NO_SUBJECT_FOUND = register(
    "no_subject_found", 422, "render_error",
    "No subject could be separated from the background of this image; nothing was charged.",
)
BACKDROP_NOT_PLAIN = register(
    "backdrop_not_plain", 422, "render_error",
    "The matting engine in use needs a plain studio backdrop (white, grey, coloured or a smooth "
    "gradient) and this image does not have one; nothing was charged.",
)
WORKER_LOST = register(
    "worker_lost", 503, "render_error",
    "The GPU worker running this render stopped before finishing; nothing was charged.",
)
RENDER_TIMEOUT = register(
    "render_timeout", 504, "render_error",
    "The render did not finish before its deadline; nothing was charged.",
)
QUEUE_UNAVAILABLE = register(
    "queue_unavailable", 503, "render_error",
    "The render could not be queued; nothing was charged. Retry shortly.",
)
URL_EXPIRED = register(
    "url_expired", 403, "permission_error",
    "This signed file URL has expired; GET the render again for fresh URLs.",
)
URL_SIGNATURE_INVALID = register(
    "url_signature_invalid", 403, "permission_error",
    "This file URL's signature is missing or wrong.",
)

# Codes a GPU worker may report in job.meta["error"] that are kept as they are. Any
# other code (or a code nobody registered) is stored as render_failed, so a worker
# can never make the API return a code the documentation does not list.
WORKER_CODES = frozenset(
    {"render_failed", "model_unavailable", "no_subject_found", "backdrop_not_plain", "invalid_image",
     "unsupported_image", "image_too_large", "render_timeout", "worker_lost"}
)


def render_failure_code(reported: str | None) -> str:
    """Maps a code reported by the worker to a registered, documented one."""
    if reported in WORKER_CODES and reported in REGISTRY:
        return reported
    return "render_failed"
