"""The HTTP face: ``POST|GET /`` for the API, ``/results/...`` for images, ``/healthz`` (liveness),
``/readyz`` (readiness: the store answers and a worker is alive; the queue and workers only to
``api.metrics_networks``), ``/metrics`` (Prometheus, from those networks), ``/v1/...`` (the
OpenAI-compatible images API, openai_api.py), ``/sdapi/v1/...`` (AUTOMATIC1111's web UI API,
webui_api.py) and ``/console`` (the web console's static files).

Request path for the API: method → body size cap (Content-Length, then while streaming) and
deadline → signature → rate limit → action. Every API reply, success or error, is HTTP 200 with
the JSON envelope; exceptions become replies through one mapping (``mps_replies``), and nothing that
goes wrong inside ever reaches the client as a traceback.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, request_response
from starlette.types import ASGIApp, Receive, Scope, Send

from aigc_image.bounded import InputRefused
from aigc_image.clock import Clock
from aigc_image.config import ApiSettings
from aigc_image.errors import TaskError
from aigc_image.fetch.policy import Network
from aigc_image.metrics import REQUESTS, exposition
from aigc_image.protocol import envelope, errors
from aigc_image.protocol.actions import Actions
from aigc_image.protocol.auth import FORM_TYPE, Authenticator, Call, RawRequest
from aigc_image.protocol.bodies import CLOSE, BodyTimeout, BodyTooLarge, deadline, read_body
from aigc_image.protocol.console import console_routes
from aigc_image.protocol.faces import FaceSettings
from aigc_image.protocol.openai_api import OpenAIImages
from aigc_image.protocol.ratelimit import RateLimiter
from aigc_image.protocol.replies import ErrorReplies, Reply
from aigc_image.protocol.webui_api import WebUIApi
from aigc_image.results.base import CONTENT_TYPES
from aigc_image.results.local import LocalStorage
from aigc_image.store.base import StoreUnavailable, TaskStore
from aigc_image.tasks import Status

FORGET_WORKERS_AFTER = 3600.0  # seconds; the rows of workers gone longer are deleted

log = logging.getLogger(__name__)

# Documented limits of Tencent Cloud API 3.0.
MAX_GET_BYTES = 32 * 1024
MAX_FORM_BYTES = 1024 * 1024
MAX_JSON_BYTES = 10 * 1024 * 1024


def build_app(
    actions: Actions,
    keys: Mapping[str, str],
    limiter: RateLimiter,
    clock: Clock,
    api: ApiSettings,
    local_storage: LocalStorage | None,
) -> Starlette:
    authenticator = Authenticator(
        keys.get, actions.handlers.keys(), clock.now, api.timestamp_window, api.allow_unsigned_payload,
        api.parse_limits,
    )  # fmt: skip
    replies = mps_replies()

    async def api_call(request: Request) -> Response:
        request_id = envelope.new_request_id()
        call: Call | None = None
        try:
            async with deadline(api.body_timeout):
                raw = await _read_request(request)
            call = authenticator.authenticate(raw)
            if not limiter.allow(call.secret_id, call.action):
                raise errors.RequestLimitExceeded(
                    f"Too many {call.action} requests for this SecretId; the limit is per second."
                )
            reply = Reply(envelope.success(request_id, await actions.dispatch(call, request_id)), "OK")
        except Exception as exc:
            reply = replies.reply(exc, request_id)
        REQUESTS.labels(call.action if call else "unknown", reply.code).inc()
        return reply.response

    async def results(request: Request) -> Response:
        if local_storage is None:
            return PlainTextResponse("Not Found", status_code=404)
        key = request.path_params["key"]
        path = local_storage.open_signed(
            key, request.query_params.get("Expires", ""), request.query_params.get("Signature", ""), clock.now()
        )
        if path is None:
            return PlainTextResponse("This image URL is invalid or has expired.", status_code=403)
        return FileResponse(path, media_type=CONTENT_TYPES[path.suffix.lstrip(".")])

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")  # liveness: the process answers; /readyz says if tasks can run

    async def readyz(request: Request) -> Response:
        """Everyone may learn whether tasks can run; only the operator's networks see why, the
        workers and the queue (host names, models, task ids are not for the public)."""
        view, ready = await asyncio.to_thread(readiness, actions.store, clock.now())
        if not from_networks(request, api.metrics_networks):
            view = {"ready": ready}
        return JSONResponse(view, status_code=200 if ready else 503)

    async def metrics(request: Request) -> Response:
        if not from_networks(request, api.metrics_networks):
            return PlainTextResponse("Forbidden: not from a network in api.metrics_networks.", status_code=403)
        try:
            text = await asyncio.to_thread(exposition, actions.store, clock.now())
        except StoreUnavailable:
            return PlainTextResponse("The task store is unavailable.", status_code=503)
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    faces = FaceSettings.from_api(api)
    openai = OpenAIImages(actions, keys, limiter, faces)
    webui = WebUIApi(actions, keys, limiter, faces)
    return Starlette(
        routes=[
            Route("/", _AnyMethod(request_response(api_call))),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/results/{key:path}", results, methods=["GET", "HEAD"]),
            *openai.routes(),
            *webui.routes(),
            *console_routes(actions.current_catalog),
        ]
    )


def mps_replies() -> ErrorReplies:
    """The MPS face's answers: an envelope (HTTP 200) with the Code, for everything but a client
    that is too slow or gone."""

    def refused(exc: errors.ApiError, request_id: str) -> Reply:
        log.info("request %s refused: %s: %s", request_id, exc.code, exc.message, extra={"request_id": request_id})
        return Reply(envelope.error(request_id, exc), exc.code)

    def too_large(exc: BodyTooLarge, request_id: str) -> Reply:
        reply = refused(errors.RequestSizeLimitExceeded(str(exc)), request_id)
        reply.response.headers.update(CLOSE)  # the rest of the body is not read
        return reply

    def unavailable(exc: StoreUnavailable, request_id: str) -> Reply:  # an outage, not a bug: no traceback
        log.warning("request %s: task store unavailable: %s", request_id, exc, extra={"request_id": request_id})
        return Reply(envelope.error(request_id, errors.InternalError("The task store is unavailable; retry shortly.")),
                     "InternalError")  # fmt: skip

    return ErrorReplies(
        {
            errors.ApiError: refused,
            InputRefused: lambda exc, request_id: refused(errors.InvalidParameter(str(exc)), request_id),
            TaskError: lambda exc, request_id: refused(errors.from_task_error(exc), request_id),
            BodyTooLarge: too_large,
            # A slow client: not an API error, so not an envelope.
            BodyTimeout: lambda exc, request_id: Reply(PlainTextResponse(str(exc), 408, CLOSE), "Timeout"),
            ClientDisconnect: lambda exc, request_id: Reply(Response(status_code=499), "ClientDisconnect"),
            StoreUnavailable: unavailable,
        },
        lambda request_id: Reply(envelope.error(request_id, errors.InternalError()), "InternalError"),
    )


class _AnyMethod:
    """Routes every HTTP method to the API, so unsupported ones get an UnsupportedProtocol envelope."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


async def _read_request(request: Request) -> RawRequest:
    method = request.method
    if method not in ("GET", "POST"):
        raise errors.UnsupportedProtocol(f"HTTP method {method} is not supported; use POST (or GET).")
    query = request.scope["query_string"].decode("latin-1")
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.scope["headers"]}
    if method == "GET":
        if len(query) > MAX_GET_BYTES:
            raise errors.RequestSizeLimitExceeded(f"GET requests are limited to {MAX_GET_BYTES} bytes.")
        return RawRequest(method, query, headers, b"")
    is_form = headers.get("content-type", "").split(";", 1)[0].strip().lower() == FORM_TYPE
    return RawRequest(method, query, headers, await read_body(request, MAX_FORM_BYTES if is_form else MAX_JSON_BYTES))


def readiness(store: TaskStore, now: float) -> tuple[dict[str, Any], bool]:
    """Whether tasks can run now, and what the store says of the queue and the workers:
    ready when the store answers and at least one worker has reported recently."""
    try:
        workers = store.workers(forget_before=now - FORGET_WORKERS_AFTER)
        counts = store.queue_counts()
    except StoreUnavailable as exc:
        return {"ready": False, "problems": [f"the task store is unavailable: {exc}"]}, False
    alive = [worker for worker in workers if worker.alive(now)]
    problems = [] if alive else ["no worker is alive: tasks wait until one reports"]
    problems += [f"{w.worker_id} cannot load {label}: {why}" for w in alive for label, why in w.failed.items()]
    view = {
        "ready": bool(alive),
        "problems": problems,
        "queue": {"waiting": counts[Status.WAIT], "running": counts[Status.RUN]},
        "workers": [
            {
                "id": w.worker_id,
                "host": w.host,
                "device": w.device,
                "state": w.state,
                "loaded": w.loaded,
                "failed": w.failed,
                "running": w.running,
                "seen_seconds_ago": round(now - w.seen_at, 1),
            }
            for w in alive
        ],
    }
    return view, bool(alive)


def from_networks(request: Request, networks: Sequence[Network]) -> bool:
    """Whether the client's address is in one of ``networks`` (a Unix socket is in none)."""
    client = request.client.host if request.client else ""
    try:
        return is_listed(ipaddress.ip_address(client.split("%")[0]), networks)
    except ValueError:
        return False


def is_listed(address: ipaddress.IPv4Address | ipaddress.IPv6Address, networks: Sequence[Network]) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:  # ::ffff:a.b.c.d on a dual-stack socket
        address = address.ipv4_mapped
    return any(address.version == network.version and address in network for network in networks)
