"""Blobs as objects in S3 or an S3-compatible store (MinIO, Ceph, R2, GCS interop...).

Keys are `prefix + digest`. `put` asks `head_object` first and skips the upload when the object
exists (content addressing makes that safe, and it saves re-sending megabytes); `get` re-hashes
what it downloads. boto3 is imported lazily so the package works without it
(`pip install 'langgraph-tiered-saver[s3]'`). Connection failures become
`TierUnavailableError("s3", ...)` like the other tiers' outages.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from langgraph_tiered_saver.blobs.base import (
    BlobMissingError,
    check_content,
    is_digest,
    validate_digest,
)
from langgraph_tiered_saver.errors import ConfigError, TierUnavailableError

_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}


def _import_boto3() -> Any:
    try:
        import boto3
    except ImportError as exc:
        raise ConfigError(
            "S3BlobStore needs boto3, which is not installed: "
            "pip install 'langgraph-tiered-saver[s3]'"
        ) from exc
    return boto3


class S3BlobStore:
    """Content-addressed objects in `bucket` under `prefix` (the bucket must exist)."""

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "lts-blobs/",
        client: Any = None,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        **client_kwargs: Any,
    ) -> None:
        if not bucket:
            raise ConfigError("S3BlobStore needs a bucket name")
        boto3 = _import_boto3()
        if client is None:
            client = boto3.client(
                "s3", endpoint_url=endpoint_url, region_name=region_name, **client_kwargs
            )
        from botocore.exceptions import (
            ClientError,
            ConnectionClosedError,
            ConnectTimeoutError,
            EndpointConnectionError,
            ReadTimeoutError,
        )

        self.bucket = bucket
        self.prefix = prefix
        self.client = client  # boto3 clients are thread-safe
        self._client_error = ClientError
        self._down = (
            EndpointConnectionError,
            ConnectionClosedError,
            ConnectTimeoutError,
            ReadTimeoutError,
        )

    def __repr__(self) -> str:
        return f"S3BlobStore(bucket={self.bucket!r}, prefix={self.prefix!r})"

    def key_for(self, digest: str) -> str:
        """The object key of the blob with `digest`."""
        return self.prefix + validate_digest(digest)

    def put(self, digest: str, data: bytes) -> None:
        key = self.key_for(digest)
        check_content(digest, data, "the data given to put()")
        if self._head(key):
            return
        self._call(
            self.client.put_object,
            Bucket=self.bucket,
            Key=key,
            Body=data,
            ContentType="application/octet-stream",
        )

    def get(self, digest: str) -> bytes:
        key = self.key_for(digest)
        try:
            response = self._call(self.client.get_object, Bucket=self.bucket, Key=key)
            data: bytes = self._call(response["Body"].read)
        except self._client_error as exc:
            if _error_code(exc) in _NOT_FOUND:
                where = f"s3://{self.bucket}/{key}"
                raise BlobMissingError(f"blob {digest} is missing from {where}") from None
            raise
        return check_content(digest, data, f"s3://{self.bucket}/{key}")

    def delete(self, digest: str) -> None:
        self._call(self.client.delete_object, Bucket=self.bucket, Key=self.key_for(digest))

    def exists(self, digest: str) -> bool:
        return self._head(self.key_for(digest))

    def list_digests(self) -> Iterator[str]:
        """Digests under the prefix, page by page; keys that are not digests are skipped."""
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.bucket, Prefix=self.prefix)
        iterator = iter(pages)
        while True:
            page = self._call(next, iterator, None)
            if page is None:
                return
            for item in page.get("Contents", ()):
                name = item["Key"][len(self.prefix) :]
                if is_digest(name):
                    yield name

    def _head(self, key: str) -> bool:
        try:
            self._call(self.client.head_object, Bucket=self.bucket, Key=key)
        except self._client_error as exc:
            if _error_code(exc) in _NOT_FOUND:
                return False
            raise
        return True

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except self._down as exc:
            raise TierUnavailableError("s3", str(exc)) from exc


def _error_code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
