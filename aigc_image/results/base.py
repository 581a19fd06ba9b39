"""The ResultStorage protocol: where finished images go and how clients fetch them."""

from __future__ import annotations

import re
from typing import Protocol

EXTENSIONS = {"png": "png", "jpeg": "jpg"}
CONTENT_TYPES = {"png": "image/png", "jpg": "image/jpeg"}
# A folder name of letters, digits and dashes (a task id): no dot, no slash, so no way out of the root.
_KEY = re.compile(r"[0-9A-Za-z][0-9A-Za-z-]{0,63}/[0-9]{1,4}-[0-9]{1,3}\.(png|jpg)")


def result_key(folder: str, attempt: int, index: int, output_format: str) -> str:
    """``<folder>/<attempt>-<index>.<ext>`` (the worker names the folder after the task): attempts
    never overwrite each other's files."""
    key = f"{folder}/{attempt}-{index}.{EXTENSIONS[output_format]}"
    if not is_result_key(key):
        raise ValueError(f"invalid result key {key!r}")
    return key


def is_result_key(key: str) -> bool:
    """Keys are built only by ``result_key``; anything else (e.g. ``../``) is refused."""
    return _KEY.fullmatch(key) is not None


class ResultStorage(Protocol):
    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` atomically: readers see all of it or nothing."""
        ...

    def url(self, key: str, expires_at: int) -> str:
        """An absolute URL that serves ``key`` until ``expires_at`` (UNIX seconds)."""
        ...

    def read(self, key: str) -> bytes:
        """The stored bytes (the OpenAI-compatible API's ``b64_json`` answers)."""
        ...

    def delete(self, key: str) -> None: ...
