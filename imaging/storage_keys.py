"""Where a render's files live, relative to the storage root.

The GPU worker reads and writes the same keys through its own storage adapter
(same STORAGE_DIR, or the same S3 bucket), so the layout is part of the contract.
"""

from __future__ import annotations

from pathlib import PurePosixPath

OUTPUT_EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}

CONTENT_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
}


def input_key(public_id: str) -> str:
    return f"inputs/{public_id}.png"


def job_id(public_id: str, attempt: int) -> str:
    """The rq job id of one attempt: each attempt has its own job and outcome stream."""
    return f"{public_id}-{attempt}"


def output_key(public_id: str, output_format: str, attempt: int) -> str:
    # Per attempt: a stray earlier run writes its own file, never the one a client has.
    return f"outputs/{public_id}-{attempt}.{OUTPUT_EXTENSIONS[output_format]}"


def matte_key(public_id: str, attempt: int) -> str:
    # The matte is always a lossless 8-bit PNG, whatever the output format.
    return f"mattes/{public_id}-{attempt}.png"


def content_type_for(key: str) -> str | None:
    """The Content-Type a stored key is served with; None for anything unexpected."""
    return CONTENT_TYPES.get(PurePosixPath(key).suffix.lower())


def is_servable(key: str) -> bool:
    """Only outputs and mattes, by a plain relative path, are ever served."""
    path = PurePosixPath(key)
    return (
        not path.is_absolute()
        and ".." not in path.parts
        and len(path.parts) == 2
        and path.parts[0] in {"outputs", "mattes"}
        and content_type_for(key) is not None
    )
