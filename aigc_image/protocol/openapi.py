"""An OpenAPI 3 description of the actions, generated from the same declarations the server
validates with (protocol/params.py).

The real API has one path, ``/``, and names the action in ``X-TC-Action``; OpenAPI cannot say
that, so each action gets a pseudo-path ``/<Action>``. Tools that send requests from this
description (the schemathesis suite in tests/, API explorers) must POST to ``/`` with the action
header and a TC3 signature; ``aigc-image openapi`` prints it. Every reply is HTTP 200 with either
the action's fields or an ``Error`` in the envelope. The OpenAI-compatible ``/v1`` endpoints are
described as they are (real paths, HTTP statuses, Bearer keys).
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
    # This server's extensions (docs/protocol.md).
    "CancelAigcImageTask": {"Status": {"type": "string", "enum": ["FAIL"]}, "Message": {"type": "string"}},
    "DeleteAigcImageTask": {},
}

# Every string parameter: no NUL (bounded.py's text rule; it refuses lone surrogates too, which a
# pattern cannot portably say, and which JSON text from most encoders never holds).
NO_NUL = "^[^\\x00]*$"


def _schema(param: p.Param) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": param.kind}  # the declared kinds are JSON Schema's type names
    if param.kind == "integer":  # within the parse limits (api.max_number_digits)
        schema.update(format="int64", minimum=-(2**63), maximum=2**63 - 1)
    elif param.kind == "string":  # api.max_string_chars, at its default; the text rule (bounded.py)
        schema["maxLength"] = p.DEFAULT_LIMITS.max_string_chars
        schema["pattern"] = NO_NUL
    if param.kind == "object":
        schema["properties"] = {name: _schema(child) for name, child in param.fields.items()}
        schema["additionalProperties"] = False
    elif param.kind == "array":
        assert param.item is not None
        schema["items"] = _schema(param.item)
    return schema


ERROR_ENVELOPE: dict[str, Any] = {
    "type": "object",
    "required": ["Response"],
    "properties": {
        "Response": {
            "type": "object",
            "required": ["Error", "RequestId"],
            "properties": {
                "Error": {
                    "type": "object",
                    "required": ["Code", "Message"],
                    "properties": {"Code": {"type": "string"}, "Message": {"type": "string"}},
                },
                "RequestId": {"type": "string", "format": "uuid"},
            },
        }
    },
}
OPENAI_ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": "string", "nullable": True},
                "code": {"type": "string", "nullable": True},
            },
        }
    },
}
SECURITY_SCHEMES: dict[str, Any] = {
    "TC3": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "TC3-HMAC-SHA256 Credential=<SecretId>/<date>/mps/tc3_request, SignedHeaders=content-type;host, "
        "Signature=<hex>, as the official SDKs sign (docs/protocol.md); with X-TC-Action, X-TC-Timestamp and "
        "X-TC-Version: 2019-06-12.",
    },
    "SecretIdAndKey": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "<SecretId>:<SecretKey>",
        "description": "The OpenAI-compatible API's key: a SecretId and its SecretKey joined by a colon.",
    },
}


def _openai_operations() -> dict[str, Any]:
    image_request = {
        "prompt": {"type": "string"},
        "model": {"type": "string", "description": "ModelName or ModelName:ModelVersion"},
        "n": {"type": "integer", "minimum": 1},
        "size": {"type": "string", "description": "WIDTHxHEIGHT, or auto for the model's native size"},
        "response_format": {"type": "string", "enum": ["url", "b64_json"]},
        "output_format": {"type": "string", "enum": ["png", "jpeg"]},
        "user": {"type": "string"},
    }
    images = {
        "type": "object",
        "properties": {
            "created": {"type": "integer"},
            "data": {
                "type": "array",
                "items": {"type": "object", "properties": {"url": {"type": "string"}, "b64_json": {"type": "string"}}},
            },
        },
    }
    errors = {
        str(status): {"description": why, "content": {"application/json": {"schema": OPENAI_ERROR}}}
        for status, why in [(400, "invalid request, refused content, or a task that failed because of its request"),
                            (401, "no or a wrong key"), (404, "no such model"), (408, "the body came too slowly"),
                            (413, "the body or an image is too large"), (429, "rate limit or task cap"),
                            (500, "the task failed for a reason of the server's"), (503, "the task store is down"),
                            (504, "still running after api.openai_timeout; the TaskId is in the message")]
    }  # fmt: skip
    answered = {"200": {"description": "The images", "content": {"application/json": {"schema": images}}}, **errors}
    edit_form = {
        "type": "object",
        "required": ["image", "prompt"],
        "properties": {
            **image_request,
            "image": {"type": "array", "items": {"type": "string", "format": "binary"}},
        },
    }
    models = {"type": "object", "properties": {"object": {"type": "string"}, "data": {"type": "array", "items": {}}}}
    secured: list[dict[str, list[str]]] = [{"SecretIdAndKey": []}]
    return {
        "/v1/images/generations": {
            "post": {
                "operationId": "openaiImagesGenerations",
                "summary": "OpenAI-compatible: make images from a prompt (one task; waits for it)",
                "security": secured,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"type": "object", "required": ["prompt"], "properties": image_request}
                        }
                    },
                },
                "responses": answered,
            }
        },
        "/v1/images/edits": {
            "post": {
                "operationId": "openaiImagesEdits",
                "summary": "OpenAI-compatible: make images from a prompt and uploaded reference images",
                "security": secured,
                "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": edit_form}}},
                "responses": answered,
            }
        },
        "/v1/models": {
            "get": {
                "operationId": "openaiModels",
                "summary": "OpenAI-compatible: the models (ModelName:ModelVersion)",
                "security": secured,
                "responses": {
                    "200": {"description": "The catalogue", "content": {"application/json": {"schema": models}}},
                    "401": errors["401"],
                },
            }
        },
        "/v1/models/{model}": {
            "get": {
                "operationId": "openaiModel",
                "summary": "OpenAI-compatible: one model (ModelName:ModelVersion, or ModelName for its default)",
                "security": secured,
                "parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {
                    "200": {
                        "description": "The model",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    "401": errors["401"],
                    "404": errors["404"],
                },
            }
        },
    }


def _operation(action: str, fields: dict[str, p.Param], required: list[str]) -> dict[str, Any]:
    body = _schema(p.obj(**fields))
    if required == ["Prompt"]:  # CreateAigcImageTask: a prompt, or reference images to edit, or both
        body["anyOf"] = [{"required": ["Prompt"]}, {"required": ["ImageInfos"]}]
    elif required:
        body["required"] = required
    success = {
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
    envelope = {"oneOf": [success, {"$ref": "#/components/schemas/ErrorEnvelope"}]}
    return {
        "post": {
            "operationId": action,
            "summary": f"{action} (send to / with X-TC-Action: {action}, TC3-signed)",
            "security": [{"TC3": []}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
            "responses": {
                "200": {
                    "description": "The envelope: the action's fields, or an Error (docs/protocol.md lists the Codes)",
                    "content": {"application/json": {"schema": envelope}},
                }
            },
        }
    }


def openapi_description(server_url: str = "http://127.0.0.1:8000") -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {"title": "aigc-image (Tencent Cloud MPS AIGC image API, 2019-06-12)", "version": __version__},
        "servers": [{"url": server_url, "description": "this server (its public_url, or api.host:api.port)"}],
        "components": {"securitySchemes": SECURITY_SCHEMES, "schemas": {"ErrorEnvelope": ERROR_ENVELOPE}},
        "paths": {
            "/CreateAigcImageTask": _operation("CreateAigcImageTask", CREATE_PARAMS, ["Prompt"]),
            "/DescribeAigcImageTask": _operation("DescribeAigcImageTask", DESCRIBE_PARAMS, ["TaskId"]),
            "/DescribeAigcTaskStatus": _operation("DescribeAigcTaskStatus", STATUS_PARAMS, ["TaskId"]),
            "/DescribeAigcTaskList": _operation("DescribeAigcTaskList", LIST_PARAMS, []),
            "/CancelAigcImageTask": _operation("CancelAigcImageTask", DESCRIBE_PARAMS, ["TaskId"]),
            "/DeleteAigcImageTask": _operation("DeleteAigcImageTask", DESCRIBE_PARAMS, ["TaskId"]),
            **_openai_operations(),
        },
    }
