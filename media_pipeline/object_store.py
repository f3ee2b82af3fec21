"""Where originals and derivatives are kept, behind one small interface.

``MEDIA_PIPELINE_STORAGE_URL`` chooses: empty for ``MEDIA_ROOT`` on this machine (the
embedded default), or ``s3://bucket/prefix`` on any S3-compatible store. Keys are the same
on both (``alerts/{alert}/media/{media}/{media}-thumbnail.jpg``, see ``storage.py``).

A job works on local files: ``workspace`` gives it a folder holding the keys it reads
(the media root itself, or a private temporary folder the originals are streamed into,
removed afterwards) and ``publish`` puts what it wrote under the same keys. So workers on
object storage share no folder.

boto3, not obstore: its presigned PUT signs the Content-Type and Content-Length headers,
so an upload URL is bound to the declared size and type and the store itself refuses any
other body; obstore's signer signs no headers.
"""

from __future__ import annotations

import contextlib
import mimetypes
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from media_pipeline.errors import InvalidMedia, PipelineError, TransientError
from media_pipeline.settings import StorageSettings
from media_pipeline.storage import atomic_outputs, relative_key

_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*")


class StorageError(PipelineError):
    """The storage setting is wrong (the message says which part)."""


def checked_key(key: str) -> str:
    """``key`` when it is a plain relative key (no ``..``, no leading ``/``), else an error."""
    if not _KEY.fullmatch(key) or ".." in key.split("/"):
        raise StorageError(f"{key[:120]!r} is not a storage key")
    return key


class Store(Protocol):
    def size(self, key: str) -> int | None:
        """The stored object's size in bytes; None when there is none."""

    def read_head(self, key: str, length: int) -> tuple[int, bytes] | None:
        """The object's size and its first ``length`` bytes (all of it when shorter), in
        one request; None when there is none."""

    def put_file(self, key: str, source: Path, content_type: str) -> None:
        """Store the file at ``source`` under ``key``, whole or not at all."""

    def delete(self, key: str) -> None: ...

    def delete_prefix(self, prefix: str) -> list[str]:
        """Delete every object under ``prefix``; the keys deleted."""
        ...

    def workspace(self, keys: Iterable[str]) -> contextlib.AbstractContextManager[Path]:
        """A folder holding the objects ``keys`` at their keys, for the block's length."""

    def publish(self, root: Path, files: Iterable[Path]) -> list[str]:
        """Store the files a job wrote in ``root`` under their keys; the keys."""

    def upload_url(self, key: str, size: int, content_type: str, ttl: int) -> str | None:
        """A URL the client PUTs the bytes to, bound to size and type; None: the API's."""

    def download_url(self, key: str, ttl: int) -> str | None:
        """A URL the client GETs the object from; None: the API signs one of its own."""

    def describe(self, key: str) -> str:
        """Where the object is, for people (a file URI, an s3:// URI)."""


class LocalStore:
    """A folder on this machine (``MEDIA_ROOT``); jobs work in it directly."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        return self.root / checked_key(key)

    def size(self, key: str) -> int | None:
        path = self.path(key)
        return path.stat().st_size if path.is_file() else None

    def read_head(self, key: str, length: int) -> tuple[int, bytes] | None:
        try:
            with self.path(key).open("rb") as file:
                return os.fstat(file.fileno()).st_size, file.read(length)
        except (FileNotFoundError, IsADirectoryError):
            return None

    def put_file(self, key: str, source: Path, content_type: str) -> None:
        with atomic_outputs(self.path(key)) as (temp,):
            shutil.copyfile(source, temp)

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> list[str]:
        folder = self.path(prefix.rstrip("/"))
        if not folder.is_dir():
            return []
        keys = sorted(relative_key(self.root, p) for p in folder.rglob("*") if p.is_file())
        shutil.rmtree(folder)
        return keys

    @contextlib.contextmanager
    def workspace(self, keys: Iterable[str]) -> Iterator[Path]:
        for key in keys:
            if not self.path(key).is_file():
                raise InvalidMedia(f"the original file {key} is missing; not retried")
        yield self.root

    def publish(self, root: Path, files: Iterable[Path]) -> list[str]:
        return [relative_key(root, path) for path in files]  # written in place already

    def upload_url(self, key: str, size: int, content_type: str, ttl: int) -> str | None:
        return None

    def download_url(self, key: str, ttl: int) -> str | None:
        return None

    def describe(self, key: str) -> str:
        return self.path(key).as_uri()


class S3Store:
    """A bucket (and key prefix) of any S3-compatible store, through boto3."""

    def __init__(self, bucket: str, prefix: str, client: Any) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.client = client

    def object_key(self, key: str) -> str:
        return f"{self.prefix}{checked_key(key)}"

    def size(self, key: str) -> int | None:
        try:
            head = self._call(self.client.head_object, Bucket=self.bucket, Key=self.object_key(key))
        except _Missing:
            return None
        return int(head["ContentLength"])

    def read_head(self, key: str, length: int) -> tuple[int, bytes] | None:
        try:
            answer = self._call(
                self.client.get_object,
                Bucket=self.bucket,
                Key=self.object_key(key),
                Range=f"bytes=0-{length - 1}",
            )
        except _Missing:
            return None
        except _EmptyObject:  # it has no first byte to answer with
            size = self.size(key)
            return None if size is None else (size, b"")
        with contextlib.closing(answer["Body"]) as body:
            head = bytes(body.read())
        # "bytes 0-262143/3145728" when the range was served; the whole object otherwise
        whole = answer.get("ContentRange", "").rpartition("/")[2]
        return (int(whole) if whole.isdigit() else len(head)), head

    def put_file(self, key: str, source: Path, content_type: str) -> None:
        # One PUT (multipart above 8 MB); the object appears whole or not at all.
        self._call(
            self.client.upload_file,
            str(source),
            self.bucket,
            self.object_key(key),
            ExtraArgs={"ContentType": content_type},
        )

    def delete(self, key: str) -> None:
        self._call(self.client.delete_object, Bucket=self.bucket, Key=self.object_key(key))

    def delete_prefix(self, prefix: str) -> list[str]:
        deleted: list[str] = []
        while True:  # a page at a time (1000 keys), deleted in one request each
            page = self._call(
                self.client.list_objects_v2,
                Bucket=self.bucket,
                Prefix=self.object_key(prefix.rstrip("/")) + "/",
            )
            keys = [item["Key"] for item in page.get("Contents", [])]
            if not keys:
                return sorted(deleted)
            self._call(
                self.client.delete_objects,
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True},
            )
            deleted += [k.removeprefix(self.prefix) for k in keys]

    @contextlib.contextmanager
    def workspace(self, keys: Iterable[str]) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix="media-pipeline-job-") as folder:
            root = Path(folder)
            for key in keys:
                target = root / checked_key(key)
                target.parent.mkdir(parents=True, exist_ok=True)
                try:  # streamed to disk in parts, never whole in memory
                    self._call(
                        self.client.download_file, self.bucket, self.object_key(key), str(target)
                    )
                except _Missing:
                    raise InvalidMedia(
                        f"the original {self.describe(key)} is missing; not retried"
                    ) from None
            yield root

    def publish(self, root: Path, files: Iterable[Path]) -> list[str]:
        keys = []
        for path in files:
            key = relative_key(root, path)
            kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            self.put_file(key, path, kind)
            keys.append(key)
        return keys

    def upload_url(self, key: str, size: int, content_type: str, ttl: int) -> str | None:
        return str(
            self.client.generate_presigned_url(
                "put_object",
                Params={
                    "Bucket": self.bucket,
                    "Key": self.object_key(key),
                    "ContentType": content_type,
                    "ContentLength": size,
                },
                ExpiresIn=ttl,
            )
        )

    def download_url(self, key: str, ttl: int) -> str | None:
        return str(
            self.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": self.object_key(key)},
                ExpiresIn=ttl,
            )
        )

    def describe(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.object_key(key)}"

    def ensure_bucket(self) -> bool:
        """Create the bucket when it does not exist; True when it was created."""
        try:
            self._call(self.client.head_bucket, Bucket=self.bucket)
            return False
        except _Missing:
            self._call(self.client.create_bucket, Bucket=self.bucket)
            return True

    def _call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        """``method`` with boto3's errors as the pipeline's: a missing object, a refusal
        (permanent, naming the bucket), or a store that may answer later (transient)."""
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return method(*args, **kwargs)
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            if code in ("404", "NoSuchKey", "NoSuchBucket", "NotFound") or status == 404:
                raise _Missing(code) from None
            if status == 416 or code == "InvalidRange":
                raise _EmptyObject(code) from None
            if status in (429, 503) or status >= 500 or code == "SlowDown":
                raise TransientError(f"object store {status} {code}") from None
            raise StorageError(
                f"object store refused {method.__name__} on bucket {self.bucket}: "
                f"{status} {code}; check the credentials and the bucket"
            ) from None
        except (BotoCoreError, S3UploadFailedError) as error:
            raise TransientError(f"object store unreachable: {type(error).__name__}") from None


class _Missing(Exception):
    """No such object (or bucket)."""


class _EmptyObject(Exception):
    """A range of an object that has no bytes."""


def get_store() -> Store:
    """The configured store."""
    from media_pipeline.settings import get_settings

    return open_store(get_settings().storage)


def open_store(storage: StorageSettings) -> Store:
    """The store ``storage`` describes (one per process and configuration)."""
    return _open_store(storage)


@lru_cache(maxsize=4)
def _open_store(storage: StorageSettings) -> Store:
    url = storage.storage_url.strip()
    if not url:
        assert storage.media_root is not None  # set by Settings
        return LocalStore(storage.media_root)
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise StorageError(
            f"MEDIA_PIPELINE_STORAGE_URL={url!r}: expected empty (MEDIA_ROOT) or s3://bucket/prefix"
        )
    prefix = parts.path.strip("/")
    if prefix:
        checked_key(prefix)
        prefix += "/"
    return S3Store(parts.netloc, prefix, s3_client(storage))


def s3_client(storage: StorageSettings) -> Any:
    import boto3
    from botocore.config import Config

    secret = storage.s3_secret_access_key.get_secret_value()
    config = Config(
        signature_version="s3v4",
        retries={"mode": "standard", "max_attempts": 5},
        max_pool_connections=32,
        # Path-style URLs: what self-hosted stores (SeaweedFS, MinIO, Ceph) answer.
        s3={"addressing_style": "path" if storage.s3_endpoint_url else "auto"},
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=storage.s3_endpoint_url or None,
        region_name=storage.s3_region or "us-east-1",
        aws_access_key_id=storage.s3_access_key_id or None,
        aws_secret_access_key=secret or None,
        config=config,
    )
