"""Results on local disk, served by the API under ``/results/<key>`` with signed URLs.

A URL carries its expiry and an HMAC of key and expiry; the API refuses a URL whose
signature does not match or whose time has passed, and the sweeper deletes the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import tempfile
from pathlib import Path
from urllib.parse import quote

from aigc_image.results.base import is_result_key


class LocalStorage:
    def __init__(self, root: Path, public_url: str, signing_key: bytes) -> None:
        self.root = root
        self._public_url = public_url.rstrip("/")
        self._signing_key = signing_key

    def _path(self, key: str) -> Path:
        if not is_result_key(key):
            raise ValueError(f"invalid result key {key!r}")
        return self.root / key

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def read(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def delete(self, key: str) -> None:
        path = self._path(key)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # only succeeds once the task's last image is gone

    def url(self, key: str, expires_at: int) -> str:
        return f"{self._public_url}/results/{quote(key)}?Expires={expires_at}&Signature={self._sign(key, expires_at)}"

    def _sign(self, key: str, expires_at: int) -> str:
        return hmac.new(self._signing_key, f"{key}\n{expires_at}".encode(), hashlib.sha256).hexdigest()

    def open_signed(self, key: str, expires: str, signature: str, now: float) -> Path | None:
        """The file behind a signed URL, or None when the URL is forged, expired or gone."""
        if not is_result_key(key) or not (expires.isascii() and expires.isdigit()) or len(expires) > 12:
            return None
        if not hmac.compare_digest(self._sign(key, int(expires)), signature):
            return None
        if int(expires) < now:
            return None
        path = self._path(key)
        return path if path.is_file() else None
