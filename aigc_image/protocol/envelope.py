"""The ``{"Response": {...}}`` envelope every reply is wrapped in.

The official SDK only parses errors when the status is 200 and the Content-Type is
exactly ``application/json`` (no charset), and it crashes on a reply without
``RequestId``; these rules live here and nowhere else.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from starlette.responses import Response

from aigc_image.protocol.errors import ApiError

CONTENT_TYPE = "application/json"


def new_request_id() -> str:
    return str(uuid.uuid4())


def _response(payload: dict[str, Any]) -> Response:
    body = json.dumps({"Response": payload}, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(body, status_code=200, headers={"Content-Type": CONTENT_TYPE})


def success(request_id: str, fields: dict[str, Any]) -> Response:
    return _response({**fields, "RequestId": request_id})


def error(request_id: str, exc: ApiError) -> Response:
    return _response({"Error": {"Code": exc.code, "Message": exc.message}, "RequestId": request_id})
