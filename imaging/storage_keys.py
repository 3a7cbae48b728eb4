"""Where a render's files live, relative to the storage root.

The GPU worker reads and writes the same keys through its own storage adapter
(same STORAGE_DIR, or the same S3 bucket), so the layout is part of the contract.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from botocore.exceptions import BotoCoreError, ClientError  # boto3 is a web dependency

# What a storage backend raises when it cannot store or read: the file system's OSError,
# or, for S3, botocore's errors (an unreachable endpoint is not an OSError there).
STORAGE_ERRORS: tuple[type[BaseException], ...] = (OSError, BotoCoreError, ClientError)

OUTPUT_EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}

CONTENT_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
}


# The keys ``output_key`` and ``matte_key`` write (and those of renders from before the
# per-attempt suffix): the only ones a signed link can name. ``GET /v1/files/{folder}/{name}``
# documents them as its two path parameters.
SERVABLE_FOLDERS = ("outputs", "mattes")
_STEM = r"rnd_[0-9a-z]{1,32}(?:-[0-9]{1,5})?"
FILE_NAME_PATTERN = _STEM + r"\.(?:png|jpg|webp)"
_SERVABLE_KEY = re.compile(rf"outputs/{_STEM}\.(?:png|jpg|webp)|mattes/{_STEM}\.png")  # mattes: PNG only


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


def is_servable_key(key: object) -> bool:
    """Whether ``key`` is in the grammar of the keys we write for outputs and mattes.

    Checked before anything else looks at a requested key (the signature, the storage),
    so bytes we never wrote, control characters and non-ASCII included, get a plain 404.
    """
    return isinstance(key, str) and _SERVABLE_KEY.fullmatch(key) is not None


def is_servable(key: str) -> bool:
    """Only outputs and mattes, by a plain relative path, are ever served."""
    path = PurePosixPath(key)
    return (
        is_servable_key(key)
        and not path.is_absolute()
        and ".." not in path.parts
        and len(path.parts) == 2
        and path.parts[0] in {"outputs", "mattes"}
        and content_type_for(key) is not None
    )
