"""The OpenAI-compatible images API under ``/v1``, for the tools that speak it (the ``openai``
SDKs, LangChain, Dify, Open WebUI).

Each call is an ordinary task made through the same path as CreateAigcImageTask: the key's
rate limit and task cap, content review, labels, and a TaskId that DescribeAigcImageTask and the
console show. The call waits for its task (``api.openai_timeout``) and answers with the images.

* ``POST /v1/images/generations`` (JSON): ``prompt``, ``model`` (``ModelName`` or
  ``ModelName:ModelVersion``), ``n``, ``size`` (``WIDTHxHEIGHT`` or ``auto``), ``response_format``
  (``url`` or ``b64_json``), ``output_format`` (``png``/``jpeg``), ``user``.
* ``POST /v1/images/edits`` (multipart): the same, with one or more ``image`` files as reference
  images, each checked (format, pixels, a full decode) before any task exists.
* ``GET /v1/models``, ``GET /v1/models/{id}``: the catalogue.

Authentication: ``Authorization: Bearer <SecretId>:<SecretKey>``. Errors have OpenAI's shape,
``{"error": {"message", "type", "param", "code"}}``, with the HTTP status OpenAI uses for each;
exceptions become replies through one mapping (``openai_replies``).

One call is one task: the openai SDKs retry 408, 409, 429, 5xx and lost connections, so a retry
joins the task its first attempt made (faces.new_request), a task that failed answers with
``x-should-retry: false`` (4xx when the request caused it, by ``Task.reason``), and so does a
call that outlives ``api.openai_timeout`` (504, with the TaskId).
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aigc_image.bounded import InputRefused, check_text, load_json
from aigc_image.catalog import ModelLabel
from aigc_image.errors import Reason, TaskError, UnknownModel
from aigc_image.metrics import REQUESTS
from aigc_image.protocol import envelope, errors
from aigc_image.protocol.actions import Actions
from aigc_image.protocol.bodies import CLOSE, BodyTimeout, BodyTooLarge, deadline, limited_stream, read_body
from aigc_image.protocol.faces import FaceSettings, ImageRefused, checked_upload, new_request, stored_images, wait_for
from aigc_image.protocol.ratelimit import RateLimiter
from aigc_image.protocol.replies import ErrorReplies, Reply
from aigc_image.protocol.validation import CREATE_PARAMS
from aigc_image.store.base import StoreUnavailable
from aigc_image.tasks import Status, Task

log = logging.getLogger(__name__)
audit = logging.getLogger("aigc_image.audit")

ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
MAX_JSON_BYTES = 1024 * 1024
MAX_FILES = 8
MAX_FIELDS = 32
GENERATION_FIELDS = {"prompt", "model", "n", "size", "response_format", "output_format", "user"}
# OpenAI parameters whose only value here is the server's own choice: accepted at that value.
AUTO_ONLY = {"quality": ("auto", "standard"), "background": ("auto",), "moderation": ("auto",), "style": ("vivid",)}
# CreateAigcImageTask's parameters as the OpenAI fields they come from, for an error's ``param``.
OPENAI_PARAMS = {
    "Prompt": "prompt",
    "OutputImageCount": "n",
    "ModelName": "model",
    "ModelVersion": "model",
    "AdditionalParameters": "size",
    "AdditionalParameters.size": "size",
    "ExtraParameters.OutputFormat": "output_format",
    "ImageInfos": "image",
}
_INTEGER = re.compile(r"-?[0-9]{1,18}")
NO_RETRY = {"x-should-retry": "false"}  # the openai SDKs obey it: a retry would only join the same task


class OpenAIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        code: str = "",
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.param = status, message, kind, code, param
        self.headers = dict(headers or {})

    def reply(self) -> Reply:
        body = {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code or None}}
        return Reply(JSONResponse(body, status_code=self.status, headers=self.headers), str(self.status))


def from_api_error(exc: errors.ApiError) -> OpenAIError:
    """The OpenAI status and type for one of this API's Codes."""
    code = exc.code
    param = OPENAI_PARAMS.get(exc.param or "", exc.param)
    if code.startswith("AuthFailure"):
        return OpenAIError(401, exc.message, "invalid_request_error", "invalid_api_key", headers=CLOSE)
    if code in ("RequestLimitExceeded", "LimitExceeded.CreateTask"):
        return OpenAIError(429, exc.message, "rate_limit_exceeded", code)
    if code == "InvalidParameter.ViolationContent":
        return OpenAIError(400, exc.message, "invalid_request_error", "content_policy_violation", param)
    if code in ("InternalError", "FailedOperation"):
        return OpenAIError(500, exc.message, "server_error", code)
    return OpenAIError(400, exc.message, "invalid_request_error", code, param)


def openai_replies() -> ErrorReplies:
    def refused(exc: OpenAIError, request_id: str) -> Reply:
        log.info("request %s refused: %s %s", request_id, exc.status, exc.message, extra={"request_id": request_id})
        return exc.reply()

    def unavailable(exc: StoreUnavailable, request_id: str) -> Reply:
        log.warning("request %s: task store unavailable: %s", request_id, exc, extra={"request_id": request_id})
        return OpenAIError(503, "The task store is unavailable; retry shortly.", "server_error").reply()

    return ErrorReplies(
        {
            OpenAIError: refused,
            errors.ApiError: lambda exc, request_id: refused(from_api_error(exc), request_id),
            UnknownModel: lambda exc, request_id: refused(
                OpenAIError(404, str(exc), "invalid_request_error", "model_not_found", "model"), request_id
            ),
            TaskError: lambda exc, request_id: refused(from_api_error(errors.from_task_error(exc)), request_id),
            InputRefused: lambda exc, request_id: refused(OpenAIError(400, str(exc), code="invalid_value"), request_id),
            ImageRefused: lambda exc, request_id: refused(
                OpenAIError(400, str(exc), code="invalid_image", param="image"), request_id
            ),
            MultiPartException: lambda exc, request_id: refused(
                OpenAIError(400, f"The multipart body cannot be read: {exc}", code="invalid_multipart"), request_id
            ),
            BodyTooLarge: lambda exc, request_id: refused(OpenAIError(413, str(exc), headers=CLOSE), request_id),
            BodyTimeout: lambda exc, request_id: refused(OpenAIError(408, str(exc), headers=CLOSE), request_id),
            ClientDisconnect: lambda exc, request_id: Reply(Response(status_code=499), "499"),
            StoreUnavailable: unavailable,
        },
        lambda request_id: OpenAIError(500, "The server failed; see its log.", "server_error").reply(),
    )


Handler = Callable[[Request, str, str], Awaitable[Response]]


class OpenAIImages:
    def __init__(self, actions: Actions, keys: Mapping[str, str], limiter: RateLimiter, settings: FaceSettings) -> None:
        self.actions = actions
        self.keys = keys
        self.limiter = limiter
        self.settings = settings
        self.replies = openai_replies()

    def routes(self) -> list[Route]:
        return [
            Route("/v1/images/generations", self._endpoint("POST", self.generations), methods=ANY_METHOD),
            Route("/v1/images/edits", self._endpoint("POST", self.edits), methods=ANY_METHOD),
            Route("/v1/models", self._endpoint("GET", self.models), methods=ANY_METHOD),
            Route("/v1/models/{model:path}", self._endpoint("GET", self.model, "/v1/models/{id}"), methods=ANY_METHOD),
            Route("/v1/{path:path}", self._endpoint("", self.unknown, "/v1/unknown"), methods=ANY_METHOD),
        ]

    def _endpoint(self, method: str, handler: Handler, action: str = "") -> Callable[[Request], Awaitable[Response]]:
        """One route: the method, the key, then ``handler``; any exception through the mapping.
        Every call is counted in aigc_image_requests_total by route and HTTP status."""

        async def endpoint(request: Request) -> Response:
            request_id = envelope.new_request_id()
            try:
                if method and request.method != method:
                    raise OpenAIError(405, f"Invalid method for {request.url.path}: use {method}.", code="method")
                response = await handler(request, self._secret_id(request), request_id)
                reply = Reply(response, str(response.status_code))
            except Exception as exc:
                reply = self.replies.reply(exc, request_id)
                if request.method not in ("GET", "HEAD"):
                    reply.response.headers.update(CLOSE)  # a refused body is not drained, however slowly it comes
            REQUESTS.labels(action or request.url.path, reply.code).inc()
            return reply.response

        return endpoint

    def _secret_id(self, request: Request) -> str:
        """The key of ``Authorization: Bearer <SecretId>:<SecretKey>``, checked in constant time.
        A refusal closes the connection: a body still coming in is not drained."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        secret_id, _, secret_key = token.strip().partition(":")
        expected = self.keys.get(secret_id)
        if scheme.lower() != "bearer" or not secret_key:
            raise OpenAIError(
                401, "Send Authorization: Bearer <SecretId>:<SecretKey>.", code="invalid_api_key", headers=CLOSE
            )
        if expected is None or not hmac.compare_digest(expected.encode(), secret_key.encode()):
            raise OpenAIError(
                401, "Incorrect API key: no such SecretId, or a wrong SecretKey.", code="invalid_api_key", headers=CLOSE
            )
        return secret_id

    # -- the endpoints ---------------------------------------------------------------------

    async def models(self, request: Request, secret_id: str, request_id: str) -> Response:
        entries = self.actions.catalog.entries.values()
        return JSONResponse({"object": "list", "data": [_model(entry.label) for entry in entries]})

    async def model(self, request: Request, secret_id: str, request_id: str) -> Response:
        name, _, version = request.path_params["model"].partition(":")
        return JSONResponse(_model(self.actions.catalog.resolve(name, version or None).label))

    async def unknown(self, request: Request, secret_id: str, request_id: str) -> Response:
        raise OpenAIError(404, f"Invalid URL ({request.method} {request.url.path[:200]})", code="unknown_url")

    async def generations(self, request: Request, secret_id: str, request_id: str) -> Response:
        async with deadline(self.settings.body_timeout):
            raw = await read_body(request, MAX_JSON_BYTES)
        body = load_json(raw, self.actions.limits.parse) if raw.strip() else None
        if not isinstance(body, dict):
            raise OpenAIError(400, "The request body must be a JSON object.")
        return await self._create_and_wait(request, body, secret_id, request_id, ())

    async def edits(self, request: Request, secret_id: str, request_id: str) -> Response:
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise OpenAIError(400, "Send images/edits as multipart/form-data with one or more image files.")
        limits = self.actions.limits
        stream = limited_stream(request, self.settings.max_image_body_bytes)
        parser = MultiPartParser(request.headers, stream, max_files=MAX_FILES, max_fields=MAX_FIELDS,
                                 max_part_size=limits.parse.max_string_chars * 4)  # fmt: skip
        async with deadline(self.settings.body_timeout):
            form = await parser.parse()
        try:
            body, uploads = await self._edit_fields(form)
        finally:
            await form.close()
        if not uploads:
            raise OpenAIError(400, "images/edits needs at least one image file.", code="missing_image", param="image")
        return await self._create_and_wait(request, body, secret_id, request_id, uploads)

    async def _edit_fields(self, form: FormData) -> tuple[dict[str, Any], tuple[str, ...]]:
        """The form's fields as a generations body, and its images checked and as data: URLs."""
        if form.get("mask") is not None:
            raise OpenAIError(400, "mask is not supported: this server edits whole images.", code="unsupported",
                              param="mask")  # fmt: skip
        body: dict[str, Any] = {}
        uploads: list[str] = []
        limit = self.actions.limits.max_upload_bytes
        for key, value in form.multi_items():
            if key in ("image", "image[]"):
                if not isinstance(value, UploadFile):
                    raise OpenAIError(400, "image must be a file.", param="image")
                data = await value.read(limit + 1)
                uploads.append(await checked_upload(data, self.actions, f"image {len(uploads)}"))
            elif isinstance(value, str):
                check_text(value, self.actions.limits.parse, key[:40])
                body[key] = _integer(value, key) if key == "n" else value
            else:
                raise OpenAIError(400, f"{key[:40]} must not be a file.", param=key[:40])
        return body, tuple(uploads)

    async def _create_and_wait(
        self, request: Request, body: dict[str, Any], secret_id: str, request_id: str, uploads: tuple[str, ...]
    ) -> Response:
        values = self._create_params(body)
        if not self.limiter.allow(secret_id, "CreateAigcImageTask"):
            raise errors.RequestLimitExceeded("Too many image requests for this key; the limit is per second.")
        if body.get("user"):
            audit.info("openai request %s key=%s user=%s", request_id, secret_id, str(body["user"])[:128])
        identity = new_request(request.headers, "v1", secret_id, values, uploads, self.settings)
        task_id = await self.actions.create(values, secret_id, identity, request_id, uploads)
        task = await wait_for(self.actions, task_id, self.settings.wait_timeout)
        if task is None:
            raise OpenAIError(
                504,
                f"Task {task_id} is still running after {self.settings.wait_timeout:g} s; "
                "DescribeAigcImageTask gives its images when it is done.",
                "server_error", "timeout", headers={**NO_RETRY, "X-Aigc-Task-Id": task_id},
            )  # fmt: skip
        if task.status is Status.FAIL:
            raise failed(task)
        if body.get("response_format", "url") == "b64_json":
            data = [{"b64_json": base64.b64encode(image).decode()} for image in await stored_images(self.actions, task)]
        else:
            data = [{"url": url} for url in self.actions.images(task)[0]]
        return JSONResponse({"created": int(task.created_at), "data": data}, headers={"X-Aigc-Task-Id": task_id})

    def _create_params(self, body: dict[str, Any]) -> dict[str, Any]:
        """The OpenAI request as CreateAigcImageTask parameters; what has no mapping is refused."""
        unknown = sorted(set(body) - GENERATION_FIELDS - set(AUTO_ONLY))
        if unknown:
            names = ", ".join(name[:40] for name in unknown[:5])
            raise OpenAIError(
                400, f"Unsupported parameter(s): {names}.", code="unknown_parameter", param=unknown[0][:40]
            )
        for name, allowed in AUTO_ONLY.items():
            if name in body and body[name] not in allowed:
                raise OpenAIError(400, f"{name} can only be {' or '.join(allowed)} on this server.", code="unsupported",
                                  param=name)  # fmt: skip
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise OpenAIError(400, "prompt is required.", code="missing_prompt", param="prompt")
        params: dict[str, Any] = {"Prompt": prompt, "OutputImageCount": body.get("n", 1)}
        model = body.get("model")
        if model:
            if not isinstance(model, str):
                raise OpenAIError(400, "model must be a string: ModelName or ModelName:ModelVersion.", param="model")
            try:
                label = ModelLabel.parse(model)
            except ValueError as exc:
                raise OpenAIError(400, str(exc), param="model") from None
            params["ModelName"] = label.name
            if label.version:
                params["ModelVersion"] = label.version
        size = body.get("size", "auto")
        if size != "auto":
            if not isinstance(size, str):
                raise OpenAIError(400, 'size must be a string, "WIDTHxHEIGHT" or "auto".', param="size")
            params["AdditionalParameters"] = {"size": size}
        if body.get("response_format", "url") not in ("url", "b64_json"):
            raise OpenAIError(400, "response_format must be url or b64_json.", param="response_format")
        if "output_format" in body:
            params["ExtraParameters"] = {"OutputFormat": body["output_format"]}
        if "AdditionalParameters" in params:  # JSON in a string, as the MPS API has it
            params["AdditionalParameters"] = json.dumps(params["AdditionalParameters"])
        if not isinstance(body.get("user", ""), str):
            raise OpenAIError(400, "user must be a string.", param="user")
        return self.actions.check(CREATE_PARAMS, params, False)


def failed(task: Task) -> OpenAIError:
    """The reply for a task that ended FAIL: the client's error (4xx) when its reason says the
    request caused it, the server's (500) otherwise; never worth a retry (it would join this task)."""
    reason = task.reason or Reason.INTERNAL
    headers = {**NO_RETRY, "X-Aigc-Task-Id": task.task_id}
    message = f"{task.message} (task {task.task_id})"
    if reason is Reason.CONTENT_REFUSED:
        return OpenAIError(400, message, "invalid_request_error", "content_policy_violation", headers=headers)
    if reason.caused_by_request:
        return OpenAIError(400, message, "invalid_request_error", reason.value, headers=headers)
    return OpenAIError(500, message, "server_error", reason.value, headers=headers)


def _model(label: str) -> dict[str, Any]:
    return {"id": label, "object": "model", "created": 0, "owned_by": "aigc-image"}


def _integer(value: str, name: str) -> int:
    if not _INTEGER.fullmatch(value.strip()):  # ASCII digits: int() would also take "٣"
        raise OpenAIError(400, f"{name} must be an integer.", param=name)
    return int(value)
