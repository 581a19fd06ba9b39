"""Where each image goes: the service's own storage, or the user's bucket (``StoreCosParam``).

A task records one location per image. A plain result key (``<task>/<attempt>-<index>.png``)
lives in the service's storage (local disk or its S3 bucket) and is deleted after
``storage.url_ttl``. ``cos://<region>/<bucket>/<object key>`` lives in a bucket the request
named; those images belong to the user and are never deleted by the service (except the
leftovers of an attempt that lost its lease, which no task references).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aigc_image.results.base import ResultStorage, is_result_key
from aigc_image.results.s3 import S3Storage, StorageRefused

USER_BUCKET = "cos://"


@dataclass(frozen=True)
class UserBucket:
    """A bucket of the user's (``StoreCosParam``): where in it images go."""

    region: str
    name: str
    path: str = ""  # a folder in the bucket


class UserBucketsDisabled(StorageRefused):
    """StoreCosParam was asked for, but the operator configured no credentials for it."""


class Results:
    def __init__(self, own: ResultStorage, user_bucket: Callable[[str, str], S3Storage] | None = None) -> None:
        """``user_bucket(region, bucket)`` opens a bucket named by StoreCosParam (None: not configured)."""
        self.own = own
        self._user_bucket = user_bucket
        self._opened: dict[tuple[str, str], S3Storage] = {}

    @property
    def accepts_user_buckets(self) -> bool:
        return self._user_bucket is not None

    def location(self, key: str, bucket: UserBucket | None = None) -> str:
        """Where image ``key`` is stored: the service's own storage, or ``bucket``."""
        if bucket is None:
            return key
        path = bucket.path.strip("/")
        return f"{USER_BUCKET}{bucket.region}/{bucket.name}/{path + '/' if path else ''}{key}"

    def put(self, location: str, data: bytes) -> None:
        storage, key = self._resolve(location)
        storage.put(key, data)

    def url(self, location: str, expires_at: int) -> str:
        storage, key = self._resolve(location)
        return storage.url(key, expires_at)

    def read(self, location: str) -> bytes:
        storage, key = self._resolve(location)
        return storage.read(key)

    def delete(self, location: str) -> None:
        storage, key = self._resolve(location)
        storage.delete(key)

    @staticmethod
    def in_user_bucket(location: str) -> bool:
        return location.startswith(USER_BUCKET)

    def _resolve(self, location: str) -> tuple[ResultStorage, str]:
        if not self.in_user_bucket(location):
            if not is_result_key(location):
                raise ValueError(f"invalid result location {location!r}")
            return self.own, location
        region, bucket, key = location.removeprefix(USER_BUCKET).split("/", 2)
        if self._user_bucket is None:
            raise UserBucketsDisabled("StoreCosParam buckets are not configured on this server (storage.cos_*)")
        if (region, bucket) not in self._opened:
            self._opened[(region, bucket)] = self._user_bucket(region, bucket)
        return self._opened[(region, bucket)], key
