"""The R6 baseline: the same web framework and signature check, and nothing else.

Starlette + uvicorn, reads the body, verifies TC3 with the service's own Authenticator and
answers an envelope. No parameter validation, no database. Run by bench/r6_create_rate.py.
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aigc_image.clock import SystemClock
from aigc_image.protocol import envelope, errors
from aigc_image.protocol.auth import Authenticator, RawRequest
from aigc_image.tasks import new_task_id

KEYS = {os.environ["AIGC_IMAGE_SECRET_ID"]: os.environ["AIGC_IMAGE_SECRET_KEY"]}
authenticator = Authenticator(KEYS.get, {"CreateAigcImageTask"}, SystemClock().now, 300)


async def endpoint(request: Request) -> Response:
    request_id = envelope.new_request_id()
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.scope["headers"]}
    try:
        authenticator.authenticate(RawRequest(request.method, "", headers, await request.body()))
    except errors.ApiError as exc:
        return envelope.error(request_id, exc)
    return envelope.success(request_id, {"TaskId": new_task_id()})


app = Starlette(routes=[Route("/", endpoint, methods=["POST"])])
