"""What the faces that wait for their tasks share: ``/v1`` (openai_api.py) and ``/sdapi/v1``
(webui_api.py) each turn a call into an ordinary task, wait for it and answer with its images.

* ``FaceSettings``: the settings they read.
* ``checked_upload``: an image sent with a request, checked before any task exists: its format,
  its pixel count from the header, and a full decode (the same checks the worker makes of a
  fetched reference image), so a bad upload is the client's error at once, not a failed task.
* ``new_request``: what identifies a create, so that a client's retry joins the task its first
  attempt made (an ``Idempotency-Key`` header, else a short-lived fingerprint of the request).
* ``wait_for``: the task, once it has finished (or None after the face's timeout).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import Headers

from aigc_image.bounded import InputRefused
from aigc_image.config import ApiSettings
from aigc_image.fetch.fetcher import FetchRefused
from aigc_image.fetch.images import decode_reference
from aigc_image.protocol.actions import Actions, NewRequest
from aigc_image.tasks import Status, Task

FORMATS = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp"}
MAX_IDEMPOTENCY_KEY = 255
RETRY_COUNT = "x-stainless-retry-count"  # sent by the openai SDKs: 0 on a first attempt


@dataclass(frozen=True)
class FaceSettings:
    body_timeout: float = 30.0
    wait_timeout: float = 300.0  # api.openai_timeout
    max_image_body_bytes: int = 64 * 1024 * 1024
    idempotency_window: float = 24 * 3600.0
    fingerprint_window: float = 60.0

    @classmethod
    def from_api(cls, api: ApiSettings) -> FaceSettings:
        return cls(
            api.body_timeout, api.openai_timeout, api.max_image_body_bytes, api.idempotency_window,
            api.fingerprint_window,
        )  # fmt: skip


class ImageRefused(Exception):
    """An uploaded image that cannot be used; the message says why."""


async def checked_upload(data: bytes, actions: Actions, name: str) -> str:
    """``data`` as a data: URL once it has passed the checks a reference image gets; ImageRefused
    naming ``name`` (the field) if it does not."""
    limits = actions.limits
    if len(data) > limits.max_upload_bytes:
        raise ImageRefused(f"{name} is larger than {limits.max_upload_bytes} bytes.")
    try:
        await asyncio.to_thread(decode_reference, data, limits.max_upload_pixels)
    except FetchRefused as exc:
        raise ImageRefused(f"{name} cannot be used: {exc}.") from None
    return f"data:image/{FORMATS[_format_of(data)]};base64,{base64.b64encode(data).decode()}"


def _format_of(data: bytes) -> str:
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return "JPEG"  # decode_reference opens nothing else


def new_request(
    headers: Headers,
    face: str,
    secret_id: str,
    values: dict[str, Any],
    uploads: tuple[str, ...],
    settings: FaceSettings,
) -> NewRequest:
    """The identity of a create: its key, its parameters (as CreateAigcImageTask's, so whitespace,
    field order or a multipart boundary do not count) and its uploads, and

    * with an ``Idempotency-Key`` header, that key: found again for ``idempotency_window``;
    * without one, nothing more: found again for ``fingerprint_window`` (``face`` "v1" only: its
      clients retry on their own), except by a request whose openai SDK says it is a first attempt
      (``x-stainless-retry-count: 0``), which is new whatever came before it.
    """
    key = headers.get("idempotency-key")
    if key is not None:
        if not key or len(key) > MAX_IDEMPOTENCY_KEY or not key.isascii() or not key.isprintable():
            raise InputRefused(f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters.")
        if settings.idempotency_window <= 0:
            return NewRequest("")
        return NewRequest(_digest(face, secret_id, values, uploads, key), settings.idempotency_window)
    if face != "v1" or settings.fingerprint_window <= 0:
        return NewRequest("")
    first_attempt = headers.get(RETRY_COUNT) == "0"
    return NewRequest(_digest(face, secret_id, values, uploads, ""), settings.fingerprint_window, not first_attempt)


def _digest(face: str, secret_id: str, values: dict[str, Any], uploads: tuple[str, ...], key: str) -> str:
    content = json.dumps(values, sort_keys=True, ensure_ascii=False)
    parts = [face, secret_id, key, content, *(hashlib.sha256(upload.encode()).hexdigest() for upload in uploads)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


async def wait_for(actions: Actions, task_id: str, timeout: float) -> Task | None:
    """The task once it is DONE or FAIL; None if it is still waiting or running after ``timeout``."""
    deadline, pause = time.monotonic() + timeout, 0.02
    while True:
        task = await actions.store.get(task_id)
        if task is not None and task.status in (Status.DONE, Status.FAIL):
            return task
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(pause)
        pause = min(pause * 1.5, 0.5)


async def stored_images(actions: Actions, task: Task) -> list[bytes]:
    """The bytes of a finished task's images."""
    return [await asyncio.to_thread(actions.storage.read, key) for key in task.result_keys]
