"""A minimal TC3-signed client for this API (used by ``aigc-image generate``).

Standard library only; speaks exactly what the official SDK sends: JSON POST to ``/``
with ``X-TC-*`` headers and a TC3-HMAC-SHA256 ``Authorization``.
"""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any
from urllib.parse import urlsplit


class ApiClientError(Exception):
    def __init__(self, code: str, message: str, request_id: str = "") -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.request_id = request_id


class ApiClient:
    def __init__(self, endpoint: str, secret_id: str, secret_key: str, timeout: float = 30.0) -> None:
        parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
        self.endpoint = f"{parts.scheme}://{parts.netloc}"
        self._url = f"{self.endpoint}/"
        self._host = parts.netloc
        self._secret_id = secret_id
        self._secret_key = secret_key
        self._timeout = timeout

    def call(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        # Imported here: `aigc-image worker` imports the CLI, and worker processes never load protocol/.
        from aigc_image.protocol.signing import sign_tc3_headers

        body = json.dumps(params).encode("utf-8")
        headers = sign_tc3_headers(
            secret_id=self._secret_id,
            secret_key=self._secret_key,
            action=action,
            body=body,
            host=self._host,
            timestamp=int(time.time()),
        )
        request = urllib.request.Request(self._url, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=self._timeout) as reply:
            payload = json.loads(reply.read())["Response"]
        if "Error" in payload:
            raise ApiClientError(payload["Error"]["Code"], payload["Error"]["Message"], payload.get("RequestId", ""))
        return payload  # type: ignore[no-any-return]

    def download(self, url: str) -> bytes:
        with urllib.request.urlopen(url, timeout=self._timeout) as reply:
            return reply.read()  # type: ignore[no-any-return]
