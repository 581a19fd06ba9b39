"""The OpenAI-compatible images API under ``/v1``, for the tools that speak it (the ``openai``
SDKs, LangChain, Dify, Open WebUI).

Each call is an ordinary task made through the same path as CreateAigcImageTask: the key's
rate limit and task cap, content review, labels, and a TaskId that DescribeAigcImageTask and the
console show. The call waits for its task (``api.openai_timeout``) and answers with the images.

* ``POST /v1/images/generations`` (JSON): ``prompt``, ``model`` (``ModelName`` or
  ``ModelName:ModelVersion``), ``n``, ``size`` (``WIDTHxHEIGHT`` or ``auto``), ``response_format``
  (``url`` or ``b64_json``), ``output_format`` (``png``/``jpeg``), ``user``.
* ``POST /v1/images/edits`` (multipart): the same, with one or more ``image`` files as reference
  images.
* ``GET /v1/models``: the catalogue.

Authentication: ``Authorization: Bearer <SecretId>:<SecretKey>``. Errors have OpenAI's shape,
``{"error": {"message", "type", "param", "code"}}``, with the HTTP status OpenAI uses for each.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aigc_image.catalog import ModelLabel
from aigc_image.errors import TaskError, UnknownModel
from aigc_image.protocol import envelope, errors
from aigc_image.protocol import params as p
from aigc_image.protocol.actions import Actions
from aigc_image.protocol.ratelimit import RateLimiter
from aigc_image.protocol.validation import CREATE_PARAMS
from aigc_image.store.base import StoreUnavailable
from aigc_image.tasks import Status, Task

log = logging.getLogger(__name__)
audit = logging.getLogger("aigc_image.audit")

MAX_JSON_BYTES = 1024 * 1024
GENERATION_FIELDS = {"prompt", "model", "n", "size", "response_format", "output_format", "user"}
# OpenAI parameters whose only value here is the server's own choice: accepted at that value.
AUTO_ONLY = {"quality": ("auto", "standard"), "background": ("auto",), "moderation": ("auto",), "style": ("vivid",)}
IMAGE_TYPES = {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp"}


class OpenAIError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str = "") -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.code = status, message, kind, code

    def response(self) -> Response:
        body = {"error": {"message": self.message, "type": self.kind, "param": None, "code": self.code or None}}
        return JSONResponse(body, status_code=self.status)


def from_api_error(exc: errors.ApiError) -> OpenAIError:
    """The OpenAI status and type for one of this API's Codes."""
    code = exc.code
    if code.startswith("AuthFailure"):
        return OpenAIError(401, exc.message, "invalid_request_error", "invalid_api_key")
    if code in ("RequestLimitExceeded", "LimitExceeded.CreateTask"):
        return OpenAIError(429, exc.message, "rate_limit_exceeded", code)
    if code == "InvalidParameter.ViolationContent":
        return OpenAIError(400, exc.message, "invalid_request_error", "content_policy_violation")
    if code in ("InternalError", "FailedOperation"):
        return OpenAIError(500, exc.message, "server_error", code)
    return OpenAIError(400, exc.message, "invalid_request_error", code)


class OpenAIImages:
    def __init__(self, actions: Actions, keys: Mapping[str, str], limiter: RateLimiter, timeout: float) -> None:
        self.actions = actions
        self.keys = keys
        self.limiter = limiter
        self.timeout = timeout

    def routes(self) -> list[Route]:
        return [
            Route("/v1/images/generations", self._endpoint(self.generations), methods=["POST"]),
            Route("/v1/images/edits", self._endpoint(self.edits), methods=["POST"]),
            Route("/v1/models", self._endpoint(self.models), methods=["GET"]),
        ]

    def _endpoint(self, handler: Callable[[Request, str, str], Awaitable[Response]]) -> Callable[..., Any]:
        async def endpoint(request: Request) -> Response:
            request_id = envelope.new_request_id()
            try:
                return await handler(request, self._secret_id(request), request_id)
            except OpenAIError as exc:
                log.info("request %s refused: %s %s", request_id, exc.status, exc.message,
                         extra={"request_id": request_id})  # fmt: skip
                return exc.response()
            except errors.ApiError as exc:
                log.info("request %s refused: %s: %s", request_id, exc.code, exc.message,
                         extra={"request_id": request_id})  # fmt: skip
                return from_api_error(exc).response()
            except UnknownModel as exc:
                return OpenAIError(404, str(exc), "invalid_request_error", "model_not_found").response()
            except TaskError as exc:
                return from_api_error(errors.from_task_error(exc)).response()
            except ClientDisconnect:
                return Response(status_code=499)
            except StoreUnavailable as exc:
                log.warning("request %s: task store unavailable: %s", request_id, exc, extra={"request_id": request_id})
                return OpenAIError(503, "The task store is unavailable; retry shortly.", "server_error").response()
            except Exception:
                log.exception("request %s failed", request_id, extra={"request_id": request_id})
                return OpenAIError(500, "The server failed; see its log.", "server_error").response()

        return endpoint

    def _secret_id(self, request: Request) -> str:
        """The key of ``Authorization: Bearer <SecretId>:<SecretKey>``, checked in constant time."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        secret_id, _, secret_key = token.strip().partition(":")
        expected = self.keys.get(secret_id)
        if scheme.lower() != "bearer" or not secret_key:
            raise OpenAIError(401, "Send Authorization: Bearer <SecretId>:<SecretKey>.", code="invalid_api_key")
        if expected is None or not hmac.compare_digest(expected.encode(), secret_key.encode()):
            raise OpenAIError(401, "Incorrect API key: no such SecretId, or a wrong SecretKey.", code="invalid_api_key")
        return secret_id

    # -- the endpoints ---------------------------------------------------------------------

    async def models(self, request: Request, secret_id: str, request_id: str) -> Response:
        entries = self.actions.catalog.entries.values()
        data = [{"id": entry.label, "object": "model", "created": 0, "owned_by": "aigc-image"} for entry in entries]
        return JSONResponse({"object": "list", "data": data})

    async def generations(self, request: Request, secret_id: str, request_id: str) -> Response:
        body = await _json_body(request)
        return await self._create_and_wait(body, secret_id, request_id, ())

    async def edits(self, request: Request, secret_id: str, request_id: str) -> Response:
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise OpenAIError(400, "Send images/edits as multipart/form-data with one or more image files.")
        limit = self.actions.limits.max_upload_bytes
        async with request.form(max_files=8, max_fields=32, max_part_size=limit) as form:
            images = [item for key in ("image", "image[]") for item in form.getlist(key)]
            if form.get("mask") is not None:
                raise OpenAIError(400, "mask is not supported: this server edits whole images.", code="unsupported")
            fields = {key: value for key, value in form.items() if isinstance(value, str)}
            uploads = tuple([await _data_url(image, limit) for image in images])
        if not uploads:
            raise OpenAIError(400, "images/edits needs at least one image file.", code="missing_image")
        body: dict[str, Any] = {key: value for key, value in fields.items() if key not in ("image", "image[]")}
        if "n" in body:
            body["n"] = _integer(body["n"], "n")
        return await self._create_and_wait(body, secret_id, request_id, uploads)

    async def _create_and_wait(
        self, body: dict[str, Any], secret_id: str, request_id: str, uploads: tuple[str, ...]
    ) -> Response:
        values = self._create_params(body)
        if not self.limiter.allow(secret_id, "CreateAigcImageTask"):
            raise errors.RequestLimitExceeded("Too many image requests for this key; the limit is per second.")
        if body.get("user"):
            audit.info("openai request %s key=%s user=%s", request_id, secret_id, str(body["user"])[:128])
        task_id = await self.actions.create(values, secret_id, secrets.token_hex(16), request_id, uploads)
        task = await self._wait(task_id)
        if task.status is Status.FAIL:
            kind = "content_policy_violation" if "content review" in task.message else "server_error"
            raise OpenAIError(400 if kind == "content_policy_violation" else 500, task.message, kind, task_id)
        urls, _ = self.actions.images(task)
        if body.get("response_format", "url") == "b64_json":
            stored = [await asyncio.to_thread(self.actions.storage.read, key) for key in task.result_keys]
            data = [{"b64_json": base64.b64encode(image).decode()} for image in stored]
        else:
            data = [{"url": url} for url in urls]
        return JSONResponse({"created": int(task.created_at), "data": data}, headers={"X-Aigc-Task-Id": task_id})

    def _create_params(self, body: dict[str, Any]) -> dict[str, Any]:
        """The OpenAI request as CreateAigcImageTask parameters; what has no mapping is refused."""
        unknown = sorted(set(body) - GENERATION_FIELDS - set(AUTO_ONLY))
        if unknown:
            raise OpenAIError(400, f"Unsupported parameter(s): {', '.join(unknown)}.", code="unknown_parameter")
        for name, allowed in AUTO_ONLY.items():
            if name in body and body[name] not in allowed:
                raise OpenAIError(400, f"{name} can only be {' or '.join(allowed)} on this server.", code="unsupported")
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise OpenAIError(400, "prompt is required.", code="missing_prompt")
        params: dict[str, Any] = {"Prompt": prompt, "OutputImageCount": body.get("n", 1)}
        model = body.get("model")
        if model:
            if not isinstance(model, str):
                raise OpenAIError(400, "model must be a string: ModelName or ModelName:ModelVersion.")
            try:
                label = ModelLabel.parse(model)
            except ValueError as exc:
                raise OpenAIError(400, str(exc)) from None
            params["ModelName"] = label.name
            if label.version:
                params["ModelVersion"] = label.version
        size = body.get("size", "auto")
        if size != "auto":
            params["AdditionalParameters"] = json.dumps({"size": str(size)})
        if body.get("response_format", "url") not in ("url", "b64_json"):
            raise OpenAIError(400, "response_format must be url or b64_json.")
        if "output_format" in body:
            params["ExtraParameters"] = {"OutputFormat": body["output_format"]}
        return p.check(CREATE_PARAMS, params, from_strings=False)

    async def _wait(self, task_id: str) -> Task:
        deadline, pause = time.monotonic() + self.timeout, 0.02
        while True:
            task = await self.actions.store.get(task_id)
            if task is not None and task.status in (Status.DONE, Status.FAIL):
                return task
            if time.monotonic() >= deadline:
                raise OpenAIError(
                    504,
                    f"Task {task_id} is still running after {self.timeout:g} s; "
                    "DescribeAigcImageTask gives its images when it is done.",
                    "server_error",
                    "timeout",
                )
            await asyncio.sleep(pause)
            pause = min(pause * 1.5, 0.5)


async def _json_body(request: Request) -> dict[str, Any]:
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_JSON_BYTES:
            raise OpenAIError(413, f"The request body is larger than {MAX_JSON_BYTES} bytes.")
    try:
        body = json.loads(raw)
    except ValueError:
        raise OpenAIError(400, "The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise OpenAIError(400, "The request body must be a JSON object.")
    return body


async def _data_url(upload: Any, limit: int) -> str:
    if not isinstance(upload, UploadFile):
        raise OpenAIError(400, "image must be a file.")
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise OpenAIError(413, f"An image is larger than {limit} bytes.")
    kind = IMAGE_TYPES.get((upload.content_type or "").split(";")[0].strip().lower(), "")
    if not kind:  # tools send application/octet-stream: tell the formats by their signature
        kind = "png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "jpeg" if data[:3] == b"\xff\xd8\xff" else ""
        kind = kind or ("webp" if data[:4] == b"RIFF" and data[8:12] == b"WEBP" else "")
    if not kind:
        raise OpenAIError(400, "Each image must be a PNG, JPEG or WebP file.", code="invalid_image_format")
    return f"data:image/{kind};base64,{base64.b64encode(data).decode()}"


def _integer(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise OpenAIError(400, f"{name} must be an integer.") from None
