"""AUTOMATIC1111's web UI API under ``/sdapi/v1``, for the tools that speak only it (Open WebUI,
SillyTavern, editor plug-ins, the ``webuiapi`` package).

Each generation is an ordinary task under a key, through the same path as CreateAigcImageTask
(rate limit, task cap, content review, labels; DescribeAigcImageTask and the console show it),
and the call waits for it as ``/v1`` does (``api.openai_timeout``).

* ``POST /sdapi/v1/txt2img``, ``POST /sdapi/v1/img2img``: ``prompt``, ``negative_prompt``,
  ``steps``, ``cfg_scale``, ``width``, ``height``, ``seed`` (-1: random), ``batch_size`` ×
  ``n_iter`` images, ``sampler_name`` (``sampler_index``), ``override_settings``
  (``sd_model_checkpoint`` only), ``send_images``; img2img adds ``init_images`` (base64 or data:
  URLs, checked before any task exists) and ``denoising_strength``. The fields A1111 clients send
  at values that mean "not used" (``enable_hr: false``, ``restore_faces: false``, ``styles: []``,
  the sampler tuning ``eta``/``s_*`` at their defaults, ...) are accepted at those values only:
  anything this server cannot do is refused, never ignored. Reply: ``{"images": [base64 PNG...],
  "parameters": {...the request}, "info": "<JSON string>"}``.
* ``GET /sdapi/v1/sd-models``, ``GET /sdapi/v1/samplers``, ``GET|POST /sdapi/v1/options`` (read;
  set ``sd_model_checkpoint``, the key's model for later calls), ``GET /sdapi/v1/progress`` (the
  key's newest running task).

Authentication: HTTP Basic, user name SecretId and password SecretKey (A1111's ``--api-auth``
scheme); 401 with ``WWW-Authenticate: Basic``. Errors as FastAPI gives them: 422
``{"detail": [{"loc", "msg", "type"}]}`` for a request that cannot be served, ``{"detail": ...}``
with the fitting status otherwise; exceptions become replies through one mapping
(``webui_replies``). A task that failed because of its request is a 422, by ``Task.reason``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aigc_image.bounded import InputRefused, ParseLimits, load_json
from aigc_image.catalog import ModelEntry
from aigc_image.errors import Reason, TaskError, UnknownModel
from aigc_image.metrics import REQUESTS
from aigc_image.protocol import additional, envelope, errors
from aigc_image.protocol.actions import Actions
from aigc_image.protocol.bodies import CLOSE, BodyTimeout, BodyTooLarge, deadline, read_body
from aigc_image.protocol.faces import FaceSettings, ImageRefused, checked_upload, new_request, stored_images, wait_for
from aigc_image.protocol.ratelimit import RateLimiter
from aigc_image.protocol.replies import ErrorReplies, Reply
from aigc_image.protocol.validation import CREATE_PARAMS
from aigc_image.store.base import StoreUnavailable
from aigc_image.tasks import Status, Task

log = logging.getLogger(__name__)

ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
MAX_JSON_BYTES = 1024 * 1024  # txt2img, options: no images in them
MAX_SEED = additional.MAX_SEED


class WebUIError(Exception):
    """A reply in FastAPI's shape: ``{"detail": detail}`` with ``status``."""

    def __init__(self, status: int, detail: Any, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(str(detail))
        self.status, self.detail, self.headers = status, detail, dict(headers or {})

    def reply(self) -> Reply:
        return Reply(JSONResponse({"detail": self.detail}, self.status, self.headers), str(self.status))


def invalid(message: str, field: str | None = None, value: Any = None) -> WebUIError:
    """422 as FastAPI answers a request its model refuses."""
    item: dict[str, Any] = {"type": "value_error", "loc": ["body", field] if field else ["body"], "msg": message}
    if field is not None:
        item["input"] = value if isinstance(value, bool | int | float | type(None)) else str(value)[:100]
    return WebUIError(422, [item])


# CreateAigcImageTask's parameters as the A1111 fields they come from, for an error's ``loc``.
A1111_FIELDS = {
    "Prompt": "prompt",
    "NegativePrompt": "negative_prompt",
    "OutputImageCount": "batch_size",
    "ModelName": "sd_model_checkpoint",
    "ModelVersion": "sd_model_checkpoint",
    "AdditionalParameters.size": "width",
    "AdditionalParameters.steps": "steps",
    "AdditionalParameters.guidance_scale": "cfg_scale",
    "AdditionalParameters.seed": "seed",
    "AdditionalParameters.strength": "denoising_strength",
}


def from_api_error(exc: errors.ApiError) -> WebUIError:
    if exc.code in ("RequestLimitExceeded", "LimitExceeded.CreateTask"):
        return WebUIError(429, exc.message)
    if exc.code in ("InternalError", "FailedOperation"):
        return WebUIError(500, exc.message)
    return invalid(exc.message, A1111_FIELDS.get(exc.param or "", exc.param))


def webui_replies() -> ErrorReplies:
    def refused(exc: WebUIError, request_id: str) -> Reply:
        log.info("request %s refused: %s %s", request_id, exc.status, exc, extra={"request_id": request_id})
        return exc.reply()

    def unavailable(exc: StoreUnavailable, request_id: str) -> Reply:
        log.warning("request %s: task store unavailable: %s", request_id, exc, extra={"request_id": request_id})
        return WebUIError(503, "The task store is unavailable; retry shortly.").reply()

    return ErrorReplies(
        {
            WebUIError: refused,
            errors.ApiError: lambda exc, request_id: refused(from_api_error(exc), request_id),
            UnknownModel: lambda exc, request_id: refused(WebUIError(404, f"Model not found: {exc}"), request_id),
            TaskError: lambda exc, request_id: refused(from_api_error(errors.from_task_error(exc)), request_id),
            InputRefused: lambda exc, request_id: refused(invalid(str(exc)), request_id),
            ImageRefused: lambda exc, request_id: refused(invalid(str(exc), "init_images"), request_id),
            BodyTooLarge: lambda exc, request_id: refused(WebUIError(413, str(exc), CLOSE), request_id),
            BodyTimeout: lambda exc, request_id: refused(WebUIError(408, str(exc), CLOSE), request_id),
            ClientDisconnect: lambda exc, request_id: Reply(Response(status_code=499), "499"),
            StoreUnavailable: unavailable,
        },
        lambda request_id: WebUIError(500, "The server failed; see its log.").reply(),
    )


# -- what a generation request may hold ---------------------------------------------------------

_NEUTRAL_VALUES: dict[str, tuple[Any, ...]] = {
    # Fields A1111 clients send at values that mean "not used"; accepted at those values only.
    "enable_hr": (False,),
    "styles": ([],),
    "subseed_strength": (0, 0.0),
    "seed_resize_from_h": (0, -1),
    "seed_resize_from_w": (0, -1),
    "restore_faces": (False,),
    "tiling": (False,),
    "eta": (0, 1, 0.0, 1.0),
    "s_churn": (0, 0.0),
    "s_tmax": (0, 0.0),
    "s_tmin": (0, 0.0),
    "s_noise": (1, 1.0),
    "script_name": ("",),
    "script_args": ([],),
    "alwayson_scripts": ({},),
    "resize_mode": (0,),  # img2img: "just resize"
    "image_cfg_scale": (1.5,),  # instruct-pix2pix models only
    "initial_noise_multiplier": (1, 1.0),
    "mask": ("",),
    "scheduler": ("", "automatic", "Automatic"),
}
# Fields that mean something only with another that is refused or off: the hires fix (enable_hr),
# a mask, a subseed (subseed_strength); A1111 itself does not use them then, whatever they hold.
_UNUSED_WITHOUT = {
    "hr_scale", "hr_upscaler", "hr_second_pass_steps", "hr_resize_x", "hr_resize_y", "hr_checkpoint_name",
    "hr_sampler_name", "hr_scheduler", "hr_prompt", "hr_negative_prompt", "firstphase_width", "firstphase_height",
    "subseed", "mask_blur", "inpainting_fill", "inpaint_full_res", "inpaint_full_res_padding",
    "inpainting_mask_invert",
}  # fmt: skip
_ANY_BOOL = {"do_not_save_samples", "do_not_save_grid", "save_images", "override_settings_restore_afterwards",
             "include_init_images", "send_images"}  # fmt: skip
_MAPPED = {"prompt", "negative_prompt", "steps", "cfg_scale", "width", "height", "seed", "batch_size", "n_iter",
           "sampler_name", "sampler_index", "override_settings"}  # fmt: skip
_IMG2IMG = {"init_images", "denoising_strength"}


def sampler_parameter(sampler_name: str) -> dict[str, str]:
    """A1111's ``sampler_name`` as ``AdditionalParameters`` ``sampler``: the one place the two meet.
    The create checks it against the model's samplers (the catalogue's A1111 names), so a name the
    model does not offer is refused, never ignored; empty: the model's own scheduler."""
    return {"sampler": sampler_name} if sampler_name else {}


def samplers(entry: ModelEntry) -> list[dict[str, Any]]:
    """What GET /sdapi/v1/samplers lists for ``entry``: the samplers ``sampler_parameter`` accepts,
    in A1111's shape."""
    return [{"name": name, "aliases": [], "options": {}} for name in entry.samplers]


class WebUIApi:
    def __init__(self, actions: Actions, keys: Mapping[str, str], limiter: RateLimiter, settings: FaceSettings) -> None:
        self.actions = actions
        self.keys = keys
        self.limiter = limiter
        self.settings = settings
        self.replies = webui_replies()
        self.chosen: dict[str, str] = {}  # SecretId → the model label it set with POST /options

    def routes(self) -> list[Route]:
        endpoints: dict[str, dict[str, Callable[[Request, str], Awaitable[Any]]]] = {
            "/sdapi/v1/txt2img": {"POST": self.txt2img},
            "/sdapi/v1/img2img": {"POST": self.img2img},
            "/sdapi/v1/sd-models": {"GET": self.sd_models},
            "/sdapi/v1/samplers": {"GET": self.samplers},
            "/sdapi/v1/options": {"GET": self.get_options, "POST": self.set_options},
            "/sdapi/v1/progress": {"GET": self.progress},
        }
        routes = [Route(path, self._endpoint(path, methods), methods=ANY_METHOD) for path, methods in endpoints.items()]
        return [*routes, Route("/sdapi/{path:path}", self._endpoint("/sdapi/unknown", {}), methods=ANY_METHOD)]

    def _endpoint(
        self, action: str, methods: dict[str, Callable[[Request, str], Awaitable[Any]]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """One path: the key, then the method's handler (its result as JSON); any exception through
        the mapping. Counted in aigc_image_requests_total by path and HTTP status."""

        async def endpoint(request: Request) -> Response:
            request_id = envelope.new_request_id()
            try:
                secret_id = self._secret_id(request)
                if not methods:
                    raise WebUIError(404, "Not Found")
                if request.method not in methods:
                    raise WebUIError(405, "Method Not Allowed", {"Allow": ", ".join(methods)})
                reply = Reply(JSONResponse(await methods[request.method](request, secret_id)), "200")
            except Exception as exc:
                reply = self.replies.reply(exc, request_id)
                if request.method not in ("GET", "HEAD"):
                    reply.response.headers.update(CLOSE)  # a refused body is not drained, however slowly it comes
            REQUESTS.labels(action, reply.code).inc()
            return reply.response

        return endpoint

    def _secret_id(self, request: Request) -> str:
        """HTTP Basic: SecretId as the user name, SecretKey as the password (constant time); a
        refusal closes the connection, so a body still coming in is not drained."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        try:
            secret_id, _, secret_key = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            secret_id = secret_key = ""
        expected = self.keys.get(secret_id) if scheme.lower() == "basic" else None
        if expected is None or not secret_key or not hmac.compare_digest(expected.encode(), secret_key.encode()):
            raise WebUIError(401, "Incorrect username or password", {"WWW-Authenticate": "Basic", **CLOSE})
        return secret_id

    # -- reading ------------------------------------------------------------------------------

    async def sd_models(self, request: Request, secret_id: str) -> list[dict[str, Any]]:
        return [
            {"title": e.label, "model_name": e.label, "hash": None, "sha256": None, "filename": e.label, "config": None}
            for e in self.actions.catalog.entries.values()
        ]

    async def samplers(self, request: Request, secret_id: str) -> list[dict[str, Any]]:
        return samplers(self._model(secret_id, None))

    async def get_options(self, request: Request, secret_id: str) -> dict[str, Any]:
        return {"sd_model_checkpoint": self._model(secret_id, None).label, "samples_format": "png"}

    async def set_options(self, request: Request, secret_id: str) -> None:
        options = await self._json(request, MAX_JSON_BYTES)
        current = await self.get_options(request, secret_id)
        for name, value in options.items():
            if name != "sd_model_checkpoint" and value != current.get(name):
                raise invalid(f"Option {name[:40]} cannot be set here; only sd_model_checkpoint can.", name, value)
        if "sd_model_checkpoint" in options:
            self.chosen[secret_id] = self._model(secret_id, options["sd_model_checkpoint"]).label

    async def progress(self, request: Request, secret_id: str) -> dict[str, Any]:
        """A1111's progress, for the key's newest task still running (or waiting)."""
        running = (await self.actions.store.list_tasks(secret_id, Status.RUN, None, 0, 1))[1]
        waiting = (await self.actions.store.list_tasks(secret_id, Status.WAIT, None, 0, 1))[1]
        tasks = running or waiting
        if not tasks:
            state = {"skipped": False, "interrupted": False, "job": "", "job_count": 0, "job_timestamp": "0",
                     "job_no": 0, "sampling_step": 0, "sampling_steps": 0}  # fmt: skip
            return {"progress": 0.0, "eta_relative": 0.0, "state": state, "current_image": None, "textinfo": None}
        task = tasks[0]
        steps = task.steps or task.spec.steps
        done = task.step / steps if steps else 0.0
        elapsed = time.time() - (task.started_at or time.time())
        eta = elapsed / done - elapsed if done > 0 else 0.0
        state = {
            "skipped": False, "interrupted": False, "job": task.task_id, "job_count": 1,
            "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.gmtime(task.created_at)), "job_no": 0,
            "sampling_step": task.step, "sampling_steps": steps,
        }  # fmt: skip
        return {"progress": round(done, 4), "eta_relative": round(eta, 2), "state": state, "current_image": None,
                "textinfo": f"{task.status.value} {task.task_id}"}  # fmt: skip

    # -- generating ---------------------------------------------------------------------------

    async def txt2img(self, request: Request, secret_id: str) -> dict[str, Any]:
        body = await self._json(request, MAX_JSON_BYTES)
        return await self._generate(request, secret_id, body, ())

    async def img2img(self, request: Request, secret_id: str) -> dict[str, Any]:
        body = await self._json(request, self.settings.max_image_body_bytes, images=True)
        images = body.get("init_images")
        if not isinstance(images, list) or not images or not all(isinstance(image, str) for image in images):
            raise invalid("init_images must be a list of one or more base64 images.", "init_images")
        uploads = []
        for index, text in enumerate(images):
            uploads.append(await checked_upload(_base64_image(text, index), self.actions, f"init_images.{index}"))
        return await self._generate(request, secret_id, body, tuple(uploads))

    async def _json(self, request: Request, limit: int, images: bool = False) -> dict[str, Any]:
        """The body as a JSON object within the parse limits; ``images``: its strings may be as long
        as a base64 image (the text fields are held to the usual limit when they are read)."""
        async with deadline(self.settings.body_timeout):
            raw = await read_body(request, limit)
        limits = self.actions.limits.parse
        if images:
            longest = 4 * self.actions.limits.max_upload_bytes // 3 + 64  # base64 and a data: prefix
            limits = ParseLimits(limits.max_depth, limits.max_number_digits, max(limits.max_string_chars, longest))
        body = load_json(raw, limits) if raw.strip() else None
        if not isinstance(body, dict):
            raise invalid("The request body must be a JSON object.")
        return body

    async def _generate(
        self, request: Request, secret_id: str, body: dict[str, Any], uploads: tuple[str, ...]
    ) -> dict[str, Any]:
        values = self._create_params(secret_id, body, bool(uploads))
        if not self.limiter.allow(secret_id, "CreateAigcImageTask"):
            raise errors.RequestLimitExceeded("Too many image requests for this key; the limit is per second.")
        identity = new_request(request.headers, "sdapi", secret_id, values, uploads, self.settings)
        task_id = await self.actions.create(values, secret_id, identity, envelope.new_request_id(), uploads)
        task = await wait_for(self.actions, task_id, self.settings.wait_timeout)
        if task is None:
            raise WebUIError(504, f"Task {task_id} is still running after {self.settings.wait_timeout:g} s; "
                                  "DescribeAigcImageTask gives its images when it is done.")  # fmt: skip
        if task.status is Status.FAIL:
            reason = task.reason or Reason.INTERNAL
            message = f"{task.message} (task {task.task_id}, {reason.value})"
            raise invalid(message) if reason.caused_by_request else WebUIError(500, message)
        send = body.get("send_images", True) is not False
        images = [base64.b64encode(data).decode() for data in await stored_images(self.actions, task)] if send else []
        shown = {key: value for key, value in body.items() if key != "init_images" or body.get("include_init_images")}
        return {"images": images, "parameters": shown, "info": json.dumps(_info(task))}

    def _create_params(self, secret_id: str, body: dict[str, Any], img2img: bool) -> dict[str, Any]:
        """The A1111 request as CreateAigcImageTask parameters; what has no mapping is refused."""
        text_limits = self.actions.limits.parse
        for name, value in body.items():
            known = name in _MAPPED or name in _UNUSED_WITHOUT or name in _ANY_BOOL or name in _NEUTRAL_VALUES
            # txt2img's denoising_strength is the hires fix's, unused without it (as in A1111).
            if not known and not (name in _IMG2IMG and (img2img or name == "denoising_strength")):
                raise invalid(f"{name[:40]} is not supported by this server.", name[:40], value)
            if name in _NEUTRAL_VALUES and value is not None and value not in _NEUTRAL_VALUES[name]:
                allowed = " or ".join(json.dumps(v) for v in _NEUTRAL_VALUES[name])
                raise invalid(f"{name} is not supported by this server: it can only be {allowed}.", name, value)
            if name in _ANY_BOOL and value is not None and not isinstance(value, bool):
                raise invalid(f"{name} must be true or false.", name, value)
            if isinstance(value, str) and name != "init_images" and len(value) > text_limits.max_string_chars:
                raise invalid(f"{name} is longer than {text_limits.max_string_chars} characters.", name)
        override = body.get("override_settings") or {}
        if not isinstance(override, dict) or set(override) - {"sd_model_checkpoint"}:
            raise invalid("override_settings may only hold sd_model_checkpoint here.", "override_settings", override)
        entry = self._model(secret_id, override.get("sd_model_checkpoint"))
        additional_params: dict[str, Any] = {}
        for name, key, kind in (("steps", "steps", int), ("cfg_scale", "guidance_scale", float),
                                ("denoising_strength", "strength", float)):  # fmt: skip
            value = _number(body, name, kind)
            if value is not None and (name != "denoising_strength" or img2img):
                additional_params[key] = value
        width, height = _number(body, "width", int), _number(body, "height", int)
        if width is not None or height is not None:
            additional_params["size"] = f"{width or entry.width}x{height or entry.height}"
        seed = _number(body, "seed", int)
        if seed is not None and seed != -1:
            if not 0 <= seed <= MAX_SEED:
                raise invalid(f"seed must be -1 (random) or between 0 and {MAX_SEED}.", "seed", seed)
            additional_params["seed"] = seed
        sampler = body.get("sampler_name") or body.get("sampler_index") or ""
        if not isinstance(sampler, str):
            raise invalid("sampler_name must be a string.", "sampler_name", sampler)
        additional_params.update(sampler_parameter(sampler))
        count = (_number(body, "batch_size", int) or 1) * (_number(body, "n_iter", int) or 1)
        params: dict[str, Any] = {
            "ModelName": entry.name,
            "ModelVersion": entry.version,
            "Prompt": _text(body, "prompt"),
            "OutputImageCount": count,
        }
        if _text(body, "negative_prompt"):
            params["NegativePrompt"] = _text(body, "negative_prompt")
        if additional_params:
            params["AdditionalParameters"] = json.dumps(additional_params)
        try:
            return self.actions.check(CREATE_PARAMS, params, False)
        except errors.ApiError as exc:
            raise from_api_error(exc) from None

    def _model(self, secret_id: str, checkpoint: Any) -> ModelEntry:
        """The model a call uses: the checkpoint it names (an sd-models title, or a ModelName),
        else the one its key set with POST /options, else the catalogue's default."""
        if checkpoint is None:
            checkpoint = self.chosen.get(secret_id, "")
        if not isinstance(checkpoint, str):
            raise invalid("sd_model_checkpoint must be a string.", "sd_model_checkpoint", checkpoint)
        name, _, version = checkpoint.partition(":")
        return self.actions.catalog.resolve(name or None, version or None)


def _number(body: dict[str, Any], name: str, kind: type) -> Any:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise invalid(f"{name} must be a number.", name, value)
    if kind is int:
        if value != int(value):
            raise invalid(f"{name} must be an integer.", name, value)
        return int(value)
    return float(value)


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name) or ""
    if not isinstance(value, str):
        raise invalid(f"{name} must be a string.", name, value)
    return value


def _base64_image(text: str, index: int) -> bytes:
    """An init image as A1111 takes it: base64, optionally as a data: URL (never a URL to fetch)."""
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ImageRefused(f"init_images.{index} is not base64 (or a base64 data: URL).") from None


def _info(task: Task) -> dict[str, Any]:
    """A1111's ``info``: what was made, with every default resolved (and the TaskId)."""
    spec = task.spec
    seed = spec.seed or 0  # every task stored since seeds were recorded has one
    seeds = [(seed + index) % (MAX_SEED + 1) for index in range(spec.image_count)]
    width, height = spec.delivered_size
    return {
        "prompt": spec.prompt, "all_prompts": [spec.prompt] * spec.image_count,
        "negative_prompt": spec.negative_prompt, "all_negative_prompts": [spec.negative_prompt] * spec.image_count,
        "seed": seed, "all_seeds": seeds, "subseed": -1, "all_subseeds": [-1] * spec.image_count,
        "subseed_strength": 0, "width": width, "height": height, "sampler_name": "", "cfg_scale": spec.guidance_scale,
        "steps": spec.steps, "batch_size": spec.image_count, "n_iter": 1, "denoising_strength": spec.strength,
        "sd_model_name": f"{spec.model_name}:{spec.model_version}", "sd_model_hash": None,
        "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.gmtime(task.created_at)), "task_id": task.task_id,
    }  # fmt: skip
