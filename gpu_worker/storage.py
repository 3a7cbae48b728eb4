"""Where inputs, outputs and mattes live: a local directory or an S3-compatible bucket.

Configured by the same environment variables as the web side's settings, so a storage
key written by one side is read by the other: STORAGE_DIR (default <repo>/var/media), or
S3_BUCKET with S3_ENDPOINT_URL, S3_REGION, S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY.

Keys are relative paths such as ``inputs/rnd_x.png``. Anything that could escape the
storage root (absolute paths, ``..``, backslashes, empty segments) is refused on both
backends, so a bad key can never read or overwrite another file.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, Protocol

from gpu_worker.config import REPO_ROOT


class StorageError(Exception):
    """The storage backend failed (not found, denied, unreachable)."""


class MissingKey(StorageError):
    pass


class InvalidKey(ValueError):
    pass


class Storage(Protocol):
    def read(self, key: str) -> bytes: ...

    def write(self, key: str, data: bytes, content_type: str) -> None: ...


def validate_key(key: str) -> str:
    """Returns the key if it is a safe relative path; raises InvalidKey otherwise."""
    if not isinstance(key, str) or not key or len(key) > 1024:
        raise InvalidKey("storage key must be a non-empty string")
    if "\\" in key or "\x00" in key or key.startswith("/") or ":" in key.split("/")[0]:
        raise InvalidKey(f"storage key {key!r} is not a relative path")
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise InvalidKey(f"storage key {key!r} has an empty, '.' or '..' segment")
    if PurePosixPath(key).is_absolute():
        raise InvalidKey(f"storage key {key!r} is absolute")
    return key


DEFAULT_FILE_MODE = 0o644


def file_mode(env: Mapping[str, str]) -> int:
    """STORAGE_FILE_MODE as an octal mode ("0644", "640"); the web side reads the same."""
    raw = env.get("STORAGE_FILE_MODE", "").strip()
    return int(raw, 8) if raw else DEFAULT_FILE_MODE


@dataclass
class LocalStorage:
    root: Path
    # Readable by a web server running as another user on the same shared disk
    # (mkstemp alone would leave 0600 files nobody else can serve).
    mode: int = DEFAULT_FILE_MODE

    def _path(self, key: str) -> Path:
        path = (self.root / validate_key(key)).resolve()
        root = self.root.resolve()
        # A symlink inside the root could still point out of it.
        if root != path and root not in path.parents:
            raise InvalidKey(f"storage key {key!r} resolves outside the storage root")
        return path

    def read(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise MissingKey(f"no object at {key!r}") from exc
        except OSError as exc:
            raise StorageError(f"cannot read {key!r}: {exc}") from exc

    def write(self, key: str, data: bytes, content_type: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: a reader never sees half a file.
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.chmod(tmp, self.mode)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


@dataclass
class S3Storage:
    bucket: str
    client: Any  # a boto3 S3 client

    def read(self, key: str) -> bytes:
        validate_key(key)
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            return response["Body"].read()
        except self.client.exceptions.NoSuchKey as exc:
            raise MissingKey(f"no object at {key!r}") from exc
        except Exception as exc:  # botocore raises many unrelated types
            raise StorageError(f"cannot read {key!r}: {exc}") from exc

    def write(self, key: str, data: bytes, content_type: str) -> None:
        validate_key(key)
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data,
                                   ContentType=content_type)
        except Exception as exc:
            raise StorageError(f"cannot write {key!r}: {exc}") from exc


def open_storage(environ: Mapping[str, str] | None = None) -> Storage:
    """The storage the environment configures (S3 when S3_BUCKET is set, else a directory)."""
    env = os.environ if environ is None else environ
    bucket = env.get("S3_BUCKET", "").strip()
    if bucket:
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=env.get("S3_ENDPOINT_URL") or None,
            region_name=env.get("S3_REGION") or None,
            aws_access_key_id=env.get("S3_ACCESS_KEY_ID") or None,
            aws_secret_access_key=env.get("S3_SECRET_ACCESS_KEY") or None,
        )
        return S3Storage(bucket=bucket, client=client)
    root = Path(env.get("STORAGE_DIR", "").strip() or REPO_ROOT / "var" / "media")
    return LocalStorage(root=root, mode=file_mode(env))
