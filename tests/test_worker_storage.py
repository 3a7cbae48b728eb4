"""The worker's storage adapter: same settings as the web side, keys that cannot escape."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gpu_worker.storage import (InvalidKey, LocalStorage, MissingKey, S3Storage, StorageError,
                                open_storage, validate_key)


def test_it_writes_and_reads_back_under_nested_keys(tmp_path):
    storage = LocalStorage(tmp_path)
    storage.write("outputs/2026/rnd_abc.png", b"\x89PNG data", "image/png")
    assert storage.read("outputs/2026/rnd_abc.png") == b"\x89PNG data"
    assert (tmp_path / "outputs" / "2026" / "rnd_abc.png").read_bytes() == b"\x89PNG data"
    # No temporary files are left behind.
    assert os.listdir(tmp_path / "outputs" / "2026") == ["rnd_abc.png"]


def test_a_missing_key_is_reported_as_missing(tmp_path):
    with pytest.raises(MissingKey):
        LocalStorage(tmp_path).read("inputs/nothing.png")


@pytest.mark.parametrize("key", [
    "", "/etc/passwd", "../secret.png", "inputs/../../secret.png", "inputs/./x.png",
    "inputs//x.png", "inputs\\x.png", "C:/x.png", "inputs/x.png/..", "a\x00b",
])
def test_keys_that_could_escape_the_storage_root_are_refused(tmp_path, key):
    storage = LocalStorage(tmp_path / "media")
    with pytest.raises(InvalidKey):
        storage.write(key, b"x", "image/png")
    with pytest.raises(InvalidKey):
        storage.read(key)


def test_a_symlink_pointing_outside_the_root_is_refused(tmp_path):
    root = tmp_path / "media"
    root.mkdir()
    (tmp_path / "outside").mkdir()
    (root / "inputs").symlink_to(tmp_path / "outside")
    with pytest.raises(InvalidKey):
        LocalStorage(root).write("inputs/x.png", b"x", "image/png")


def test_plain_relative_keys_are_accepted():
    assert validate_key("inputs/rnd_x.png") == "inputs/rnd_x.png"
    assert validate_key("mattes/rnd_x-1.png") == "mattes/rnd_x-1.png"


def test_open_storage_uses_storage_dir_like_the_web_side(tmp_path):
    storage = open_storage({"STORAGE_DIR": str(tmp_path)})
    assert isinstance(storage, LocalStorage) and storage.root == Path(tmp_path)


def test_open_storage_defaults_to_var_media_in_the_repository():
    storage = open_storage({})
    assert isinstance(storage, LocalStorage)
    assert storage.root == Path(__file__).resolve().parent.parent / "var" / "media"


def test_open_storage_uses_s3_when_a_bucket_is_configured():
    storage = open_storage({"S3_BUCKET": "renders", "S3_ENDPOINT_URL": "http://127.0.0.1:9000",
                            "S3_REGION": "eu-west-1", "S3_ACCESS_KEY_ID": "key",
                            "S3_SECRET_ACCESS_KEY": "secret"})
    assert isinstance(storage, S3Storage) and storage.bucket == "renders"
    assert storage.client.meta.endpoint_url == "http://127.0.0.1:9000"
    assert storage.client.meta.region_name == "eu-west-1"


class FakeS3Client:
    """Records calls like a boto3 S3 client (the real server runs in test_s3_storage_end_to_end.py)."""

    class exceptions:  # noqa: N801 - mirrors boto3's attribute
        class NoSuchKey(Exception):
            pass

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], tuple[bytes, str]] = {}

    def put_object(self, Bucket, Key, Body, ContentType):  # noqa: N803 - boto3's names
        self.objects[(Bucket, Key)] = (Body, ContentType)

    def get_object(self, Bucket, Key):  # noqa: N803
        if (Bucket, Key) not in self.objects:
            raise self.exceptions.NoSuchKey()
        import io

        return {"Body": io.BytesIO(self.objects[(Bucket, Key)][0])}


def test_the_s3_backend_stores_bytes_with_their_content_type_and_validates_keys():
    client = FakeS3Client()
    storage = S3Storage("renders", client)
    storage.write("outputs/r.webp", b"RIFF", "image/webp")
    assert client.objects[("renders", "outputs/r.webp")] == (b"RIFF", "image/webp")
    assert storage.read("outputs/r.webp") == b"RIFF"
    with pytest.raises(MissingKey):
        storage.read("outputs/none.webp")
    with pytest.raises(InvalidKey):
        storage.write("../r.webp", b"x", "image/webp")


def test_s3_failures_surface_as_storage_errors():
    class Failing(FakeS3Client):
        def put_object(self, **kwargs):
            raise RuntimeError("connection refused")

    with pytest.raises(StorageError):
        S3Storage("renders", Failing()).write("outputs/r.png", b"x", "image/png")


def test_files_the_worker_writes_are_readable_by_a_web_server_running_as_another_user(tmp_path):
    storage = open_storage({"STORAGE_DIR": str(tmp_path)})
    storage.write("outputs/rnd_x-1.png", b"\x89PNG", "image/png")
    assert (tmp_path / "outputs" / "rnd_x-1.png").stat().st_mode & 0o777 == 0o644


def test_storage_file_mode_sets_the_mode_of_written_files(tmp_path):
    storage = open_storage({"STORAGE_DIR": str(tmp_path), "STORAGE_FILE_MODE": "0640"})
    storage.write("mattes/rnd_x-1.png", b"\x89PNG", "image/png")
    assert (tmp_path / "mattes" / "rnd_x-1.png").stat().st_mode & 0o777 == 0o640
