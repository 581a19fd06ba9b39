"""Image tasks seen through the generic AIGC task actions: DescribeAigcTaskStatus and
DescribeAigcTaskList (MPS documents them for its other AIGC tasks; here they list image tasks).

Statuses map WAIT→PENDING, RUN→RUNNING, DONE→FINISHED, FAIL→FAILED. Times are
``YYYY-MM-DD HH:MM:SS`` in China Standard Time (UTC+8), as MPS writes them. ``TaskInfo`` is
a JSON string with the progress of the current attempt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from aigc_image.protocol import errors
from aigc_image.protocol import params as p
from aigc_image.tasks import Status, Task, is_task_id

TASK_TYPE = "AigcImage"
STATUS_NAMES = {Status.WAIT: "PENDING", Status.RUN: "RUNNING", Status.DONE: "FINISHED", Status.FAIL: "FAILED"}
# Documented statuses that image tasks never reach here: a cancelled task (CancelAigcImageTask) or one
# stopped by worker.task_timeout ends FAILED, with a message saying so.
UNREACHED_STATUSES = ("STOP", "TIMEOUT")
CHINA_STANDARD_TIME = timezone(timedelta(hours=8))
MAX_PAGE_SIZE = 100
MAX_OFFSET = 100_000  # the newest 100,000 tasks can be listed, as MPS documents
FAILED_RESULT_CODE = -1

STATUS_PARAMS: dict[str, p.Param] = {"TaskId": p.STRING}
_FILTER_FIELDS = ("TaskId", "TaskType", "TaskStatus", "Resolution", "Ratio", "ExecuteMode", "VideoType", "ModelTier")
LIST_PARAMS: dict[str, p.Param] = {
    "PageNum": p.INTEGER,
    "PageSize": p.INTEGER,
    "QueryTaskFilter": p.obj(**dict.fromkeys(_FILTER_FIELDS, p.STRING)),
}
# Filters of video tasks, and the two whose image-task meaning is not implemented yet.
_UNSUPPORTED_FILTERS = ("Resolution", "Ratio", "ExecuteMode", "VideoType", "ModelTier")


def format_time(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return datetime.fromtimestamp(seconds, UTC).astimezone(CHINA_STANDARD_TIME).strftime("%Y-%m-%d %H:%M:%S")


def task_info(task: Task, ahead: int | None = None) -> str:
    """Progress of the current attempt: ``{"step": .., "steps": .., "progress": 0–100}``, and while
    the task waits (``ahead`` given), ``"tasks_ahead"``: about how many tasks will run before it."""
    steps = task.steps or task.spec.steps
    step = steps if task.status is Status.DONE else min(task.step, steps)
    info = {"step": step, "steps": steps, "progress": round(100 * step / steps) if steps else 0}
    return json.dumps(info if ahead is None else info | {"tasks_ahead": ahead})


def request_body(task: Task) -> str:
    """The task's parameters, named as in CreateAigcImageTask, every default resolved."""
    spec = task.spec
    body: dict[str, Any] = {
        "ModelName": spec.model_name,
        "ModelVersion": spec.model_version,
        "Prompt": spec.prompt,
        "NegativePrompt": spec.negative_prompt,
        "OutputImageCount": spec.image_count,
        "ExtraParameters": {
            "AspectRatio": spec.aspect_ratio,
            "Resolution": spec.resolution,
            "LogoAdd": int(spec.logo),
            "OutputFormat": spec.output_format,
        },
        "AdditionalParameters": json.dumps(
            {
                "size": "{}x{}".format(*spec.delivered_size),
                "seed": spec.seed,
                "steps": spec.steps,
                "guidance_scale": spec.guidance_scale,
            }
            | ({"strength": spec.strength} if spec.strength is not None else {})
        ),
        "Operator": spec.operator,
    }
    if spec.reference_urls:
        body["ImageInfos"] = [{"ImageUrl": _shown(url)} for url in spec.reference_urls]
    if spec.scene_type:
        body["SceneType"] = spec.scene_type
    if spec.enhanced_prompt:  # EnhancePrompt: the prompt actually used
        body["EnhancePrompt"] = True
        body["EnhancedPrompt"] = spec.enhanced_prompt
    if spec.cos_bucket:
        body["StoreCosParam"] = {
            "CosBucketName": spec.cos_bucket,
            "CosBucketRegion": spec.cos_region,
            "CosBucketPath": spec.cos_path,
        }
    return json.dumps(body, ensure_ascii=False)


def _shown(url: str) -> str:
    """A reference URL as echoed; an uploaded image (a data: URL) by its type and size only."""
    if not url.startswith("data:"):
        return url
    head, _, data = url.partition(",")
    return f"{head},... (uploaded, {len(data) * 3 // 4} bytes)"


def _common(task: Task, message: str, ahead: int | None = None) -> dict[str, Any]:
    return {
        "TaskId": task.task_id,
        "TaskType": TASK_TYPE,
        "TaskStatus": STATUS_NAMES[task.status],
        "CreateTime": format_time(task.created_at),
        "ScheduledTime": format_time(task.started_at),
        "FinishedTime": format_time(task.finished_at),
        "TaskResultCode": FAILED_RESULT_CODE if task.status is Status.FAIL else 0,
        "TaskResultMsg": message,
        "RequestBody": request_body(task),
        "TaskInfo": task_info(task, ahead),
        "Stage": None,
    }


def status_reply(task: Task, urls: list[str], message: str, ahead: int | None = None) -> dict[str, Any]:
    """DescribeAigcTaskStatus: ``OutputUrl`` is the first image's URL (all of them: the List);
    ``ahead``: the waiting task's queue position, in its ``TaskInfo``."""
    return _common(task, message, ahead) | {"OutputUrl": urls[0] if urls else None}


def list_item(task: Task, urls: list[str], message: str) -> dict[str, Any]:
    spec = task.spec
    return _common(task, message) | {
        "Urls": urls,
        "Resolution": spec.resolution or None,
        "Ratio": spec.aspect_ratio or None,
    }


@dataclass(frozen=True)
class ListQuery:
    page_num: int
    page_size: int
    status: Status | None
    task_id: str | None
    matches_image_tasks: bool  # False: the filter excludes every image task

    @property
    def offset(self) -> int:
        return (self.page_num - 1) * self.page_size


def list_query(values: dict[str, Any]) -> ListQuery:
    page_num, page_size = values.get("PageNum", 1), values.get("PageSize", 10)
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise errors.InvalidParameterValue(f"PageSize must be between 1 and {MAX_PAGE_SIZE}; got {page_size}.")
    if page_num < 1 or page_num * page_size > MAX_OFFSET:
        raise errors.InvalidParameterValue(f"PageNum must be at least 1 and address at most {MAX_OFFSET} tasks.")
    query = values.get("QueryTaskFilter", {})
    for name in _UNSUPPORTED_FILTERS:
        if query.get(name):
            raise errors.UnsupportedOperation(f"QueryTaskFilter.{name} is not supported by this server.")
    matches = query.get("TaskType", TASK_TYPE) in ("", TASK_TYPE)
    status = None
    if name := query.get("TaskStatus", ""):
        known = {v: k for k, v in STATUS_NAMES.items()}
        if name not in known and name not in UNREACHED_STATUSES:
            raise errors.InvalidParameterValue(
                f"QueryTaskFilter.TaskStatus must be one of {', '.join([*known, *UNREACHED_STATUSES])}; got {name!r}."
            )
        status = known.get(name)
        matches = matches and status is not None
    task_id = query.get("TaskId") or None
    if task_id is not None and not is_task_id(task_id):
        matches = False  # not an image task id: no image task has it
    return ListQuery(page_num, page_size, status, task_id, matches)
