"""Results in an S3-compatible bucket (AWS S3, Tencent COS, MinIO, ...), fetched by presigned URL.

Used for the service's own images (``storage.backend = s3``) and for the buckets that
``StoreCosParam`` names. A bucket that refuses the upload (missing, access denied, bad key)
raises StorageRefused, which fails the task at once with a message naming the bucket; a
network error is transient, and the worker retries the task later.
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from aigc_image.clock import Clock
from aigc_image.errors import Reason, ServiceError
from aigc_image.results.base import CONTENT_TYPES

MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # the SigV4 limit


class StorageRefused(ServiceError):
    """The storage answered, and said no: retrying will not help."""

    permanent = True
    reason = Reason.STORAGE_REFUSED


def s3_client(endpoint: str, region: str, access_key: str, secret_key: str, addressing_style: str) -> Any:
    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": addressing_style},
        connect_timeout=5,
        read_timeout=60,
        retries={"mode": "standard", "max_attempts": 3},
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint or None,
        region_name=region,
        aws_access_key_id=access_key or None,
        aws_secret_access_key=secret_key or None,
        config=config,
    )


class S3Storage:
    def __init__(self, client: Any, bucket: str, clock: Clock, prefix: str = "", region: str = "") -> None:
        self._client = client
        self.bucket = bucket
        self._prefix = prefix
        self._clock = clock
        self._where = f"bucket {bucket!r}" + (f" (region {region})" if region else "")

    def put(self, key: str, data: bytes) -> None:
        content_type = CONTENT_TYPES.get(key.rsplit(".", 1)[-1], "application/octet-stream")
        try:  # a PUT is atomic: readers see the whole object or none
            self._client.put_object(Bucket=self.bucket, Key=self._prefix + key, Body=data, ContentType=content_type)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise StorageRefused(
                f"Storing the images in {self._where} failed: {error.get('Code', 'error')}: "
                f"{error.get('Message', str(exc))}"
            ) from exc

    def read(self, key: str) -> bytes:
        data: bytes = self._client.get_object(Bucket=self.bucket, Key=self._prefix + key)["Body"].read()
        return data

    def delete(self, key: str) -> None:
        self._client.delete_object(Bucket=self.bucket, Key=self._prefix + key)

    def url(self, key: str, expires_at: int) -> str:
        seconds = min(MAX_PRESIGN_SECONDS, max(1, int(expires_at - self._clock.now())))
        url: str = self._client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._prefix + key}, ExpiresIn=seconds
        )
        return url
