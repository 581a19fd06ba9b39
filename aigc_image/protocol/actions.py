"""One method per API action: check the parameters, review, call the store, shape the reply.

No SQL, files or GPUs here: the store, the catalogue and the result storage are passed in;
CreateAigcImageTask's checks are validation.py's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aigc_image.bounded import ParseLimits
from aigc_image.catalog import Catalog
from aigc_image.clock import Clock
from aigc_image.enhance import PromptEnhancer
from aigc_image.errors import Reason
from aigc_image.fetch.policy import Network
from aigc_image.metrics import TASKS_CANCELLED
from aigc_image.moderation.review import ContentReview, ReviewUnavailable
from aigc_image.protocol import errors
from aigc_image.protocol import params as p
from aigc_image.protocol import task_views as views
from aigc_image.protocol.auth import Call
from aigc_image.protocol.params import DEFAULT_LIMITS
from aigc_image.protocol.validation import CREATE_PARAMS, CreateLimits, task_spec
from aigc_image.results.buckets import Results
from aigc_image.store.base import ActiveTaskLimit, TaskStore
from aigc_image.tasks import NewTask, Status, Task, TaskSpec, is_task_id, new_task_id

# Refusals go to their own logger, so operators can route them to an audit trail.
audit = logging.getLogger("aigc_image.audit")
log = logging.getLogger(__name__)

DESCRIBE_PARAMS: dict[str, p.Param] = {"TaskId": p.STRING}
CANCELLED = "The task was cancelled by its owner (CancelAigcImageTask) before it finished."


@dataclass(frozen=True)
class NewRequest:
    """What identifies a create request, so that the same request again finds its task (a replay,
    a client's retry) instead of making another; see TaskStore.create and tasks.NewTask."""

    fingerprint: str  # "" for none
    window: float = 0.0  # seconds it finds its task (0: as long as the task is kept)
    joins_earlier: bool = True  # False: the client says this request is new, not a retry


@dataclass(frozen=True)
class Limits:
    max_prompt_chars: int
    url_ttl: int
    max_active_tasks_per_key: int = 0
    fetch_allow_networks: tuple[Network, ...] = ()
    max_upload_bytes: int = 20 * 1024 * 1024  # an image sent with a request (/v1 edits, A1111 img2img)
    max_upload_pixels: int = 4096 * 4096
    parse: ParseLimits = DEFAULT_LIMITS  # what any JSON or string a client sends may be


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
        current_catalog: Callable[[], Awaitable[Catalog]] | None = None,
        weights: Callable[[str], float] | None = None,
    ) -> None:
        self.store = store
        self.catalog = catalog
        # The catalogue with the deployment's default model as it is now (deployment.DefaultModel).
        self.current_catalog = current_catalog or self._static_catalog
        self.storage = storage
        self.clock = clock
        self.limits = limits
        self.review = review
        self.log_prompts = log_prompts
        self.enhancer = enhancer or PromptEnhancer()
        self.weight_of = weights or (lambda secret_id: 1.0)  # a key's share under contention (keys.toml)
        self.handlers: dict[str, Callable[[Call, str], Awaitable[dict[str, Any]]]] = {
            "CreateAigcImageTask": self.create_aigc_image_task,
            "DescribeAigcImageTask": self.describe_aigc_image_task,
            "DescribeAigcTaskStatus": self.describe_aigc_task_status,
            "DescribeAigcTaskList": self.describe_aigc_task_list,
            # This server's extensions (docs/protocol.md), in the same envelope and error style.
            "CancelAigcImageTask": self.cancel_aigc_image_task,
            "DeleteAigcImageTask": self.delete_aigc_image_task,
        }

    async def _static_catalog(self) -> Catalog:
        return self.catalog

    async def dispatch(self, call: Call, request_id: str) -> dict[str, Any]:
        return await self.handlers[call.action](call, request_id)

    # -- CreateAigcImageTask ------------------------------------------------------------

    async def create_aigc_image_task(self, call: Call, request_id: str) -> dict[str, Any]:
        values = self.check(CREATE_PARAMS, call.params, call.from_strings)
        return {"TaskId": await self.create(values, call.secret_id, NewRequest(call.fingerprint), request_id)}

    def check(self, declared: dict[str, p.Param], params: dict[str, Any], from_strings: bool) -> dict[str, Any]:
        """An action's parameters checked against their declarations, within the parse limits."""
        return p.check(declared, params, from_strings=from_strings, limits=self.limits.parse)

    async def create(
        self,
        values: dict[str, Any],
        secret_id: str,
        request: NewRequest,
        request_id: str,
        uploaded: tuple[str, ...] = (),
    ) -> str:
        """Check, review and store a new task (CreateAigcImageTask's parameters, already typed), or
        find the one an earlier create of the same ``request`` made; ``uploaded``: reference images
        sent with the request, as data: URLs (/v1 edits, A1111 img2img), already checked."""
        limits = CreateLimits(
            self.limits.max_prompt_chars,
            self.limits.fetch_allow_networks,
            self.storage.accepts_user_buckets,
            self.limits.parse,
        )
        spec, entry = task_spec(values, await self.current_catalog(), limits, uploaded)
        self.review_prompts(spec, secret_id, request_id)
        if values.get("EnhancePrompt", False):
            spec = await self.enhance(spec, entry.prompt_style, secret_id, request_id)
        new = NewTask(
            new_task_id(),
            secret_id,
            spec,
            request.fingerprint or None,
            request.window,
            request.joins_earlier,
            self.weight_of(secret_id),
        )
        try:
            task_id = await self.store.create(new, self.limits.max_active_tasks_per_key)
        except ActiveTaskLimit:
            raise errors.CreateTaskLimitExceeded(
                f"This key already has {self.limits.max_active_tasks_per_key} tasks waiting or running; "
                "wait for some to finish."
            ) from None
        return task_id

    async def enhance(self, spec: TaskSpec, style: str, secret_id: str, request_id: str) -> TaskSpec:
        """EnhancePrompt: the rewritten prompt, reviewed like the original, recorded in the spec."""
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

    # -- DescribeAigcImageTask ----------------------------------------------------------

    async def describe_aigc_image_task(self, call: Call, request_id: str) -> dict[str, Any]:
        task = await self._own_task(call, DESCRIBE_PARAMS)
        urls, message = self.images(task)
        return {"Status": task.status.value, "ImageUrls": urls, "Message": message}

    async def _own_task(self, call: Call, declared: dict[str, p.Param]) -> Task:
        """The task a TaskId parameter names, if it exists and belongs to the caller's key."""
        values = self.check(declared, call.params, call.from_strings)
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
        ahead = await self.store.tasks_ahead(task) if task.status is Status.WAIT else None
        return views.status_reply(task, urls, message, ahead)

    async def describe_aigc_task_list(self, call: Call, request_id: str) -> dict[str, Any]:
        values = self.check(views.LIST_PARAMS, call.params, call.from_strings)
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

    # -- CancelAigcImageTask, DeleteAigcImageTask (extensions) -------------------------------

    async def cancel_aigc_image_task(self, call: Call, request_id: str) -> dict[str, Any]:
        """End a waiting task at once, a running one at its next step (its worker finds its lease
        gone and keeps nothing); either way it is FAIL from now. Cancelling it again answers the same."""
        task = await self._own_task(call, DESCRIBE_PARAMS)
        before, after = await self.store.cancel(task.task_id, call.secret_id, CANCELLED)
        if before is None or after is None:  # deleted since we looked
            raise errors.TaskNotFound(f"Task {task.task_id} does not exist.")
        if after.reason is not Reason.CANCELLED:
            raise errors.TaskFinished(f"Task {task.task_id} has already finished ({after.status}); nothing to cancel.")
        if before.status in (Status.WAIT, Status.RUN):
            TASKS_CANCELLED.labels(before.status.value).inc()
            log.info(
                "task %s: cancelled by its key while %s", task.task_id, before.status, extra={"task_id": task.task_id}
            )
        return {"Status": after.status.value, "Message": after.message}

    async def delete_aigc_image_task(self, call: Call, request_id: str) -> dict[str, Any]:
        """Delete a finished task: its images from this server's storage, then its record. A delete
        that fails midway (storage unreachable) keeps the record, so calling again finishes it."""
        task = await self._own_task(call, DESCRIBE_PARAMS)
        if task.status in (Status.WAIT, Status.RUN):
            raise errors.TaskNotFinished(
                f"Task {task.task_id} is {task.status}; cancel it first (CancelAigcImageTask), then delete it."
            )
        await asyncio.to_thread(self._delete_images, task)
        await self.store.delete_task(task.task_id, call.secret_id)  # False: a concurrent delete got there first
        log.info("task %s: deleted by its key", task.task_id, extra={"task_id": task.task_id})
        return {}

    def _delete_images(self, task: Task) -> None:
        """The task's images in this server's storage; those in the user's own bucket (StoreCosParam)
        are the user's, as at retention."""
        if task.results_purged:
            return
        for location in task.result_keys:
            if not self.storage.in_user_bucket(location):
                self.storage.delete(location)
