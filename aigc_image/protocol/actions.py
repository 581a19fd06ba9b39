"""One method per API action: validate the parameters, call the store, shape the reply.

No SQL, files or GPUs here: the store, the registry and the result storage are passed in.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aigc_image.catalog import Catalog, ModelEntry
from aigc_image.clock import Clock
from aigc_image.enhance import PromptEnhancer
from aigc_image.fetch.policy import Network, is_allowed
from aigc_image.media.encode import FORMATS
from aigc_image.moderation.review import ContentReview, ReviewUnavailable
from aigc_image.protocol import errors
from aigc_image.protocol import params as p
from aigc_image.protocol import task_views as views
from aigc_image.protocol.additional import MAX_SEED, parse_additional
from aigc_image.protocol.auth import Call
from aigc_image.protocol.sizes import resolve_size
from aigc_image.storage.results import Results
from aigc_image.store.base import ActiveTaskLimit, TaskStore
from aigc_image.tasks import PANORAMA, NewTask, Status, Task, TaskSpec, is_task_id, new_task_id

MAX_OPERATOR_CHARS = 256
MAX_URL_CHARS = 2048
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_REGION = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
_PATH = re.compile(r"[A-Za-z0-9!_.*'()/-]*")

# Refusals go to their own logger, so operators can route them to an audit trail.
audit = logging.getLogger("aigc_image.audit")
log = logging.getLogger(__name__)

CREATE_PARAMS: dict[str, p.Param] = {
    "ModelName": p.STRING,
    "ModelVersion": p.STRING,
    "SceneType": p.STRING,
    "Prompt": p.STRING,
    "NegativePrompt": p.STRING,
    "EnhancePrompt": p.BOOLEAN,
    "ImageInfos": p.array(p.obj(ImageUrl=p.STRING, ReferenceType=p.STRING)),
    "OutputImageCount": p.INTEGER,
    "ExtraParameters": p.obj(AspectRatio=p.STRING, Resolution=p.STRING, LogoAdd=p.INTEGER, OutputFormat=p.STRING),
    "AdditionalParameters": p.STRING,
    "StoreCosParam": p.obj(CosBucketName=p.STRING, CosBucketRegion=p.STRING, CosBucketPath=p.STRING),
    "Operator": p.STRING,
}
DESCRIBE_PARAMS: dict[str, p.Param] = {"TaskId": p.STRING}


@dataclass(frozen=True)
class Limits:
    max_prompt_chars: int
    url_ttl: int
    max_active_tasks_per_key: int = 0
    fetch_allow_networks: tuple[Network, ...] = ()


class Actions:
    def __init__(
        self,
        store: TaskStore,
        catalog: Catalog,
        storage: Results,
        clock: Clock,
        limits: Limits,
        review: ContentReview,
        log_prompts: bool = False,
        enhancer: PromptEnhancer | None = None,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.storage = storage
        self.clock = clock
        self.limits = limits
        self.review = review
        self.log_prompts = log_prompts
        self.enhancer = enhancer or PromptEnhancer()
        self.handlers: dict[str, Callable[[Call, str], Awaitable[dict[str, Any]]]] = {
            "CreateAigcImageTask": self.create_aigc_image_task,
            "DescribeAigcImageTask": self.describe_aigc_image_task,
            "DescribeAigcTaskStatus": self.describe_aigc_task_status,
            "DescribeAigcTaskList": self.describe_aigc_task_list,
        }

    async def dispatch(self, call: Call, request_id: str) -> dict[str, Any]:
        return await self.handlers[call.action](call, request_id)

    # -- CreateAigcImageTask ------------------------------------------------------------

    async def create_aigc_image_task(self, call: Call, request_id: str) -> dict[str, Any]:
        values = p.check(CREATE_PARAMS, call.params, from_strings=call.from_strings)
        spec = self.task_spec(values)
        self.review_prompts(spec, call.secret_id, request_id)
        if values.get("EnhancePrompt", False):
            spec = await self.enhance(spec, call.secret_id, request_id)
        new = NewTask(new_task_id(), call.secret_id, spec, call.fingerprint)
        try:
            task_id = await self.store.create(new, self.limits.max_active_tasks_per_key)
        except ActiveTaskLimit:
            raise errors.CreateTaskLimitExceeded(
                f"This key already has {self.limits.max_active_tasks_per_key} tasks waiting or running; "
                "wait for some to finish."
            ) from None
        return {"TaskId": task_id}

    def task_spec(self, values: dict[str, Any]) -> TaskSpec:
        """Validate a CreateAigcImageTask request and resolve every default."""
        entry = self.catalog.resolve(values.get("ModelName"), values.get("ModelVersion"))

        references = reference_urls(values.get("ImageInfos", []), entry, self.limits.fetch_allow_networks)
        prompt = values.get("Prompt", "")
        if not prompt.strip() and not references:
            raise errors.MissingParameter("Prompt is required when no reference image (ImageInfos) is given.")
        negative_prompt = values.get("NegativePrompt", "")
        for name, text in (("Prompt", prompt), ("NegativePrompt", negative_prompt)):
            if len(text) > self.limits.max_prompt_chars:
                raise errors.InvalidParameterValue(
                    f"{name} is {len(text)} characters long; the limit is {self.limits.max_prompt_chars}."
                )
            if "\x00" in text:
                raise errors.InvalidParameterValue(f"{name} must not contain NUL characters.")
        if negative_prompt and not entry.negative_prompt:
            raise errors.ModelNotSupported(f"Model {entry.label} does not support NegativePrompt.")

        count = values.get("OutputImageCount", 1)
        if not 1 <= count <= entry.max_output_images:
            raise errors.InvalidParameterValue(
                f"OutputImageCount must be between 1 and {entry.max_output_images} "
                f"for model {entry.label}; got {count}."
            )
        extra = values.get("ExtraParameters", {})
        output_format = extra.get("OutputFormat", "png")
        if output_format not in FORMATS:
            raise errors.InvalidParameterValue(
                f"ExtraParameters.OutputFormat must be one of {', '.join(FORMATS)}; got {output_format!r}."
            )
        logo = extra.get("LogoAdd", 0)
        if logo not in (0, 1):
            raise errors.InvalidParameterValue(f"ExtraParameters.LogoAdd must be 0 or 1; got {logo}.")
        operator = values.get("Operator", "")
        if len(operator) > MAX_OPERATOR_CHARS:
            raise errors.InvalidParameterValue(f"Operator is longer than {MAX_OPERATOR_CHARS} characters.")
        additional = parse_additional(values.get("AdditionalParameters", ""))
        aspect_ratio, resolution = extra.get("AspectRatio", ""), extra.get("Resolution", "")
        scene_type = values.get("SceneType", "")
        if scene_type not in ("", PANORAMA):
            raise errors.InvalidParameterValue(f"SceneType must be {PANORAMA}; got {scene_type!r}.")
        if scene_type and not entry.panorama:
            raise errors.ModelNotSupported(f"Model {entry.label} does not support SceneType {PANORAMA}.")
        generated, delivered = resolve_size(entry, aspect_ratio, resolution, additional.size, bool(scene_type))
        if additional.strength is not None and not references:
            raise errors.InvalidParameter(
                "AdditionalParameters strength applies only with reference images (ImageInfos)."
            )
        if additional.strength is not None and not entry.reference_strength:
            raise errors.ModelNotSupported(
                f"Model {entry.label} edits its reference images as the prompt says; it takes no strength."
            )

        if additional.steps is not None and additional.steps > entry.max_steps:
            raise errors.InvalidParameterValue(
                f"AdditionalParameters steps must be at most {entry.max_steps} for model {entry.label}; "
                f"got {additional.steps}."
            )
        bucket, region, path = self.user_bucket(values.get("StoreCosParam", {}))

        return TaskSpec(
            model_name=entry.name,
            model_version=entry.version,
            prompt=prompt,
            negative_prompt=negative_prompt,
            image_count=count,
            output_format=output_format,
            width=generated[0],
            height=generated[1],
            steps=additional.steps or entry.steps,
            guidance_scale=additional.guidance_scale if additional.guidance_scale is not None else entry.guidance_scale,
            operator=operator,
            seed=additional.seed if additional.seed is not None else secrets.randbelow(MAX_SEED + 1),
            delivered=delivered if delivered != generated else None,
            logo=logo == 1,
            aspect_ratio=aspect_ratio,
            resolution=resolution,
            cos_bucket=bucket,
            cos_region=region,
            cos_path=path,
            reference_urls=references,
            strength=additional.strength,
            scene_type=scene_type,
        )

    def user_bucket(self, cos: dict[str, str]) -> tuple[str, str, str]:
        """StoreCosParam checked: (bucket, region, path), or empty strings when not given."""
        if not any(cos.values()):
            return "", "", ""
        if not self.storage.accepts_user_buckets:
            raise errors.UnsupportedOperation(
                "StoreCosParam is not enabled on this server: its operator has not configured "
                "storage.cos_secret_id and storage.cos_secret_key (docs/configuration.md)."
            )
        bucket, region = cos.get("CosBucketName", ""), cos.get("CosBucketRegion", "")
        path = cos.get("CosBucketPath", "").strip("/")
        for name, value in (("CosBucketName", bucket), ("CosBucketRegion", region)):
            if not value:
                raise errors.MissingParameter(f"StoreCosParam.{name} is required to store results in a bucket.")
        if not _BUCKET.fullmatch(bucket):
            raise errors.InvalidParameterValue(
                f"StoreCosParam.CosBucketName {bucket!r} is not a bucket name (3–63 lowercase letters, digits, "
                "dots and hyphens, e.g. aigc-results-1250000000)."
            )
        if not _REGION.fullmatch(region):
            raise errors.InvalidParameterValue(f"StoreCosParam.CosBucketRegion {region!r} is not a region name.")
        if len(path) > 512 or not _PATH.fullmatch(path) or any(p in ("", ".", "..") for p in path.split("/") if path):
            raise errors.InvalidParameterValue(
                "StoreCosParam.CosBucketPath must be a relative path of letters, digits and -_.!*'() "
                "separated by /, at most 512 characters, without . or .. segments."
            )
        return bucket, region, path

    # -- DescribeAigcImageTask ----------------------------------------------------------

    async def enhance(self, spec: TaskSpec, secret_id: str, request_id: str) -> TaskSpec:
        """EnhancePrompt: the rewritten prompt, reviewed like the original, recorded in the spec."""
        style = self.catalog.resolve(spec.model_name, spec.model_version).prompt_style
        if self.enhancer.llm is None:
            enhanced, source = self.enhancer.enhance(spec.prompt, style)
        else:  # a network call: off the event loop
            enhanced, source = await asyncio.to_thread(self.enhancer.enhance, spec.prompt, style)
        self._review_text("EnhancedPrompt", enhanced, secret_id, request_id)
        log.info("request %s: prompt enhanced by the %s enhancer", request_id, source)
        return dataclasses.replace(spec, enhanced_prompt=enhanced)

    def review_prompts(self, spec: TaskSpec, secret_id: str, request_id: str) -> None:
        """Refuse prompts that break the content policy; fail closed if the review cannot run."""
        for field_name, text in (("Prompt", spec.prompt), ("NegativePrompt", spec.negative_prompt)):
            self._review_text(field_name, text, secret_id, request_id)

    def _review_text(self, field_name: str, text: str, secret_id: str, request_id: str) -> None:
        if not text:
            return
        try:
            verdict = self.review.check_text(field_name, text)
        except ReviewUnavailable as exc:
            audit.error("review unavailable key=%s request=%s field=%s: %s", secret_id, request_id, field_name, exc)
            raise errors.FailedOperation("Content review is unavailable, so the request was refused.") from None
        if not verdict.allowed:
            shown = f" text={text!r}" if self.log_prompts else ""
            audit.warning(
                "refused key=%s request=%s field=%s by=%s%s", secret_id, request_id, field_name, verdict.source, shown
            )
            raise errors.ViolationContent(f"{field_name} was refused by content review.")

    async def describe_aigc_image_task(self, call: Call, request_id: str) -> dict[str, Any]:
        task = await self._own_task(call, DESCRIBE_PARAMS)
        urls, message = self.images(task)
        return {"Status": task.status.value, "ImageUrls": urls, "Message": message}

    async def _own_task(self, call: Call, declared: dict[str, p.Param]) -> Task:
        """The task a TaskId parameter names, if it exists and belongs to the caller's key."""
        values = p.check(declared, call.params, from_strings=call.from_strings)
        task_id = values.get("TaskId")
        if not task_id:
            raise errors.MissingParameter("TaskId is required.")
        if not is_task_id(task_id):
            raise errors.InvalidParameterValue(f"TaskId {task_id!r} is not an image task id (4-AigcImage-<32 hex>).")
        task = await self.store.get(task_id)
        if task is None or task.secret_id != call.secret_id:
            raise errors.TaskNotFound(f"Task {task_id} does not exist.")
        return task

    def images(self, task: Task) -> tuple[list[str], str]:
        """The task's image URLs while they are valid, and its message."""
        message = task.message if task.status in (Status.DONE, Status.FAIL) else ""
        if task.status is not Status.DONE or task.finished_at is None:
            return [], message
        expires_at = int(task.finished_at + self.limits.url_ttl)
        if task.spec.cos_bucket and expires_at < self.clock.now():
            return [], (
                f"The image URLs have expired; the images remain in bucket {task.spec.cos_bucket} "
                f"under {task.spec.cos_path.strip('/') or 'its root'}/{task.task_id}/."
            )
        if task.results_purged or expires_at < self.clock.now():
            return [], "The images have expired and were deleted; they are kept for a limited time after the task."
        return [self.storage.url(key, expires_at) for key in task.result_keys], message

    # -- DescribeAigcTaskStatus, DescribeAigcTaskList ------------------------------------

    async def describe_aigc_task_status(self, call: Call, request_id: str) -> dict[str, Any]:
        task = await self._own_task(call, views.STATUS_PARAMS)
        urls, message = self.images(task)
        return views.status_reply(task, urls, message)

    async def describe_aigc_task_list(self, call: Call, request_id: str) -> dict[str, Any]:
        values = p.check(views.LIST_PARAMS, call.params, from_strings=call.from_strings)
        query = views.list_query(values)
        total, tasks = 0, list[Task]()  # when the filter excludes every image task
        if query.matches_image_tasks:
            total, tasks = await self.store.list_tasks(
                call.secret_id, query.status, query.task_id, query.offset, query.page_size
            )
        return {
            "Total": total,
            "PageNum": query.page_num,
            "PageSize": query.page_size,
            "Tasks": [views.list_item(task, *self.images(task)) for task in tasks],
        }


def reference_urls(infos: list[dict[str, str]], entry: ModelEntry, allow: tuple[Network, ...]) -> tuple[str, ...]:
    """ImageInfos checked as far as they can be before fetching: count, scheme, literal addresses.

    Host names are resolved and checked by the worker's fetcher, at the time it connects.
    """
    if not infos:
        return ()
    if entry.max_reference_images == 0:
        raise errors.ModelNotSupported(f"Model {entry.label} does not take reference images (ImageInfos).")
    if len(infos) > entry.max_reference_images:
        raise errors.InvalidParameterValue(
            f"Model {entry.label} takes at most {entry.max_reference_images} reference image(s); got {len(infos)}."
        )
    urls = []
    for index, info in enumerate(infos):
        name = f"ImageInfos.{index}"
        if info.get("ReferenceType"):
            raise errors.UnsupportedOperation(f"{name}.ReferenceType is not supported by this server yet.")
        url = info.get("ImageUrl", "")
        if not url:
            raise errors.MissingParameter(f"{name}.ImageUrl is required.")
        if len(url) > MAX_URL_CHARS:
            raise errors.InvalidParameterValue(f"{name}.ImageUrl is longer than {MAX_URL_CHARS} characters.")
        if any(char.isspace() or not char.isprintable() for char in url):
            raise errors.InvalidParameterValue(f"{name}.ImageUrl must not contain spaces or control characters.")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise errors.InvalidParameterValue(f"{name}.ImageUrl must be an http or https URL with a host.")
        if parts.username is not None or parts.password is not None:
            raise errors.InvalidParameterValue(f"{name}.ImageUrl must not contain credentials.")
        try:
            literal = ipaddress.ip_address(parts.hostname)
        except ValueError:
            literal = None
        if literal is not None and not is_allowed(literal, allow):
            raise errors.InvalidParameterValue(
                f"{name}.ImageUrl points at {literal}, which is not a public internet address."
            )
        urls.append(url)
    return tuple(urls)
