"""Expected render failures, each with a stable code the web side maps to an API error.

The web side reads the code from the failed job (``job.meta["error"]``), never from the
exception text, so these strings are a contract: add codes, never rename them.

=====================  ===============================================================
code                   meaning
=====================  ===============================================================
model_unavailable      the configured engine's weights are not installed (or failed to
                       load); nothing the client can fix, nothing to charge
no_subject_found       the matte is empty: no subject stands out from the background
invalid_image          the stored input is missing, unreadable or not an 8-bit RGB image
backdrop_not_plain     the classical engine was asked to matte an image whose backdrop is
                       not a plain studio backdrop (it refuses instead of guessing)
render_timeout         the render ran past the job's time limit
render_failed          anything unexpected (a bug, storage down); logged with a traceback
=====================  ===============================================================
"""

from __future__ import annotations

MODEL_UNAVAILABLE = "model_unavailable"
NO_SUBJECT_FOUND = "no_subject_found"
INVALID_IMAGE = "invalid_image"
BACKDROP_NOT_PLAIN = "backdrop_not_plain"
RENDER_TIMEOUT = "render_timeout"
RENDER_FAILED = "render_failed"

CODES: frozenset[str] = frozenset(
    {MODEL_UNAVAILABLE, NO_SUBJECT_FOUND, INVALID_IMAGE, BACKDROP_NOT_PLAIN, RENDER_TIMEOUT,
     RENDER_FAILED}
)


class RenderError(Exception):
    """A render failed in a way we expected; `code` is one of `CODES`."""

    def __init__(self, code: str, message: str) -> None:
        if code not in CODES:
            raise ValueError(f"unknown render error code {code!r}")
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}
