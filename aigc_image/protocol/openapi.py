"""An OpenAPI 3 description of the actions, generated from the same declarations the server
validates with (protocol/params.py).

The real API has one path, ``/``, and names the action in ``X-TC-Action``; OpenAPI cannot say
that, so each action gets a pseudo-path ``/<Action>``. Tools that send requests from this
description (the schemathesis suite in tests/, API explorers) must POST to ``/`` with the action
header and a TC3 signature; ``aigc-image openapi`` prints it.
"""

from __future__ import annotations

from typing import Any

from aigc_image import __version__
from aigc_image.protocol import params as p
from aigc_image.protocol.actions import DESCRIBE_PARAMS
from aigc_image.protocol.task_views import LIST_PARAMS, STATUS_PARAMS
from aigc_image.protocol.validation import CREATE_PARAMS

_RESPONSES: dict[str, dict[str, Any]] = {
    "CreateAigcImageTask": {"TaskId": {"type": "string"}},
    "DescribeAigcImageTask": {
        "Status": {"type": "string", "enum": ["WAIT", "RUN", "FAIL", "DONE"]},
        "ImageUrls": {"type": "array", "items": {"type": "string"}},
        "Message": {"type": "string"},
    },
    "DescribeAigcTaskStatus": {
        "TaskId": {"type": "string"},
        "TaskStatus": {"type": "string", "enum": ["PENDING", "RUNNING", "FINISHED", "FAILED"]},
        "OutputUrl": {"type": "string", "nullable": True},
        "TaskInfo": {"type": "string"},
    },
    "DescribeAigcTaskList": {
        "Total": {"type": "integer"},
        "PageNum": {"type": "integer"},
        "PageSize": {"type": "integer"},
        "Tasks": {"type": "array", "items": {"type": "object"}},
    },
}


def _schema(param: p.Param) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": param.kind}  # the declared kinds are JSON Schema's type names
    if param.kind == "object":
        schema["properties"] = {name: _schema(child) for name, child in param.fields.items()}
        schema["additionalProperties"] = False
    elif param.kind == "array":
        assert param.item is not None
        schema["items"] = _schema(param.item)
    return schema


def _operation(action: str, fields: dict[str, p.Param], required: list[str]) -> dict[str, Any]:
    body = _schema(p.obj(**fields))
    if required == ["Prompt"]:  # CreateAigcImageTask: a prompt, or reference images to edit, or both
        body["anyOf"] = [{"required": ["Prompt"]}, {"required": ["ImageInfos"]}]
    elif required:
        body["required"] = required
    envelope = {
        "type": "object",
        "required": ["Response"],
        "properties": {
            "Response": {
                "type": "object",
                "required": ["RequestId"],
                "properties": {**_RESPONSES[action], "RequestId": {"type": "string", "format": "uuid"}},
            }
        },
    }
    return {
        "post": {
            "operationId": action,
            "summary": f"{action} (send to / with X-TC-Action: {action}, TC3-signed)",
            "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
            "responses": {"200": {"description": "Envelope", "content": {"application/json": {"schema": envelope}}}},
        }
    }


def openapi_description() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {"title": "aigc-image (Tencent Cloud MPS AIGC image API, 2019-06-12)", "version": __version__},
        "paths": {
            "/CreateAigcImageTask": _operation("CreateAigcImageTask", CREATE_PARAMS, ["Prompt"]),
            "/DescribeAigcImageTask": _operation("DescribeAigcImageTask", DESCRIBE_PARAMS, ["TaskId"]),
            "/DescribeAigcTaskStatus": _operation("DescribeAigcTaskStatus", STATUS_PARAMS, ["TaskId"]),
            "/DescribeAigcTaskList": _operation("DescribeAigcTaskList", LIST_PARAMS, []),
        },
    }
