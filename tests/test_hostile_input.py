"""Hostile JSON in every field of every face, property-based (in-process: the real app over a real
SQLite store): nesting past the depth limit (to 5,000 levels), numbers past the digit limit (to
6,000 digits, beyond Python's own 4,300), strings past the length limit, NUL and lone surrogates,
alone or inside an ordinary value; in the MPS body and its AdditionalParameters, in /v1 JSON and
form fields, in /sdapi/v1 bodies.

Properties: never a 5xx and never InternalError (the face's own client error instead), no task
created, and the server still answers. FUZZ_EXAMPLES sets the number of cases per test (CI: 60).
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from aigc_image.clock import SystemClock
from aigc_image.config import load_settings
from aigc_image.protocol import signing
from aigc_image.protocol.validation import CREATE_PARAMS
from aigc_image.wiring.api import build_service
from tests.helpers import SECRET_ID, SECRET_KEY

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAX_STRING = 1000  # the app's api.max_string_chars here, so that long strings stay quick to make
BEARER = {"Authorization": f"Bearer {SECRET_ID}:{SECRET_KEY}"}
BASIC = (SECRET_ID, SECRET_KEY)


@dataclass
class Target:
    client: TestClient
    db: Path

    def task_count(self) -> int:
        with sqlite3.connect(self.db) as db:
            return int(db.execute("SELECT count(*) FROM tasks").fetchone()[0])

    def still_answers(self) -> None:
        assert self.client.get("/healthz").text == "ok"
        assert self.client.get("/v1/models", headers=BEARER).status_code == 200


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    data = tmp_path_factory.mktemp("hostile")
    environ = {
        "AIGC_IMAGE_DATA_DIR": str(data),
        "AIGC_IMAGE_MODELS_DEFAULT_MODEL": "tiny-random",
        "AIGC_IMAGE_API_RATE_LIMIT": "0",
        "AIGC_IMAGE_API_MAX_ACTIVE_TASKS_PER_KEY": "0",
        "AIGC_IMAGE_API_MAX_STRING_CHARS": str(MAX_STRING),
        "AIGC_IMAGE_API_OPENAI_TIMEOUT": "0.2",  # no worker here: a request wrongly accepted fails fast
    }
    app, store, _ = build_service(load_settings(environ=environ), SystemClock(), {SECRET_ID: SECRET_KEY})
    with TestClient(app, base_url="http://testserver") as client:
        yield Target(client, data / "aigc-image.db")
    store.close()


# -- hostile JSON, as text (json.dumps itself could not write 5,000 levels) --------------------


def nested(depth: int, leaf: str, kind: str) -> str:
    return "[" * depth + leaf + "]" * depth if kind == "array" else '{"a":' * depth + leaf + "}" * depth


hostile_json = st.one_of(
    st.builds(nested, st.integers(33, 5000), st.just("1"), st.sampled_from(["array", "object"])),
    st.integers(33, 6000).map(lambda digits: "9" * digits),
    st.integers(33, 400).map(lambda digits: "-0." + "1" * digits + "e5"),
    st.integers(MAX_STRING + 1, 20 * MAX_STRING).map(lambda n: json.dumps("x" * n)),
    st.sampled_from([r'"a\u0000b"', r'"\u0000"', r'"\ud800"', r'"x\udfff"', r'{"\u0000": 1}', r'{"\ud800": 1}']),
    st.integers(MAX_STRING + 1, 5 * MAX_STRING).map(lambda n: "{" + json.dumps("k" * n) + ": 1}"),
)
# ... or inside an ordinary value: hostility one level down must be found too.
hostile = hostile_json | hostile_json.map(lambda v: f"[{v}]") | hostile_json.map(lambda v: '{"x": ' + v + "}")


def body_with(fields: dict[str, Any], name: str, value: str) -> bytes:
    """``fields`` as a JSON object, with ``name`` set to the raw JSON text ``value``."""
    others = {key: v for key, v in fields.items() if key != name}
    head = json.dumps(others)[:-1]
    return f"{head}{', ' if others else ''}{json.dumps(name)}: {value}}}".encode()


# -- the faces and their fields ----------------------------------------------------------------

MPS_FIELDS = [*CREATE_PARAMS, "TaskId", "PageNum", "QueryTaskFilter", "Unknown"]
V1_FIELDS = ["prompt", "model", "n", "size", "response_format", "output_format", "user", "quality", "style", "x"]
SDAPI_FIELDS = ["prompt", "negative_prompt", "steps", "cfg_scale", "width", "height", "seed", "batch_size", "n_iter",
                "sampler_name", "override_settings", "enable_hr", "styles", "eta", "send_images", "hr_scale",
                "alwayson_scripts", "script_args", "denoising_strength", "init_images", "x"]  # fmt: skip
FACES = (
    [("mps", action, name) for action in ("CreateAigcImageTask", "DescribeAigcImageTask") for name in MPS_FIELDS]
    + [("mps-additional", "CreateAigcImageTask", "AdditionalParameters")]
    + [("v1", "/v1/images/generations", name) for name in V1_FIELDS]
    + [("sdapi", path, name) for path in ("/sdapi/v1/txt2img", "/sdapi/v1/img2img") for name in SDAPI_FIELDS]
    + [("sdapi", "/sdapi/v1/options", name) for name in ("sd_model_checkpoint", "samples_format")]
)


def send(target: Target, face: str, where: str, name: str, value: str) -> Any:
    if face in ("mps", "mps-additional"):
        if face == "mps-additional":  # JSON inside a JSON string, as the MPS API has it
            value = json.dumps(value)
        ordinary = {"Prompt": "a lighthouse"} if where.startswith("Create") else {"TaskId": "4-AigcImage-" + "0" * 32}
        body = body_with(ordinary, name, value)
        headers = signing.sign_tc3_headers(secret_id=SECRET_ID, secret_key=SECRET_KEY, action=where, body=body,
                                           host="testserver", timestamp=int(time.time()))  # fmt: skip
        return target.client.post("/", content=body, headers=headers)
    if face == "v1":
        body = body_with({"prompt": "a lighthouse", "model": "tiny-random", "size": "64x64"}, name, value)
        return target.client.post(where, content=body, headers={**BEARER, "Content-Type": "application/json"})
    image = base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()
    ordinary = {"prompt": "a lighthouse", "width": 64, "height": 64, "steps": 2, "sampler_name": ""}
    if where.endswith("img2img"):
        ordinary["init_images"] = [image]
    body = body_with(ordinary, name, value)
    return target.client.post(where, content=body, headers={"Content-Type": "application/json"}, auth=BASIC)


@FUZZ
@given(field=st.sampled_from(FACES), value=hostile)
def test_hostile_json_in_any_field_of_any_face_is_the_clients_error(
    target: Target, field: tuple[str, str, str], value: str
) -> None:
    face, where, name = field
    before = target.task_count()
    reply = send(target, face, where, name, value)
    assert reply.status_code < 500, reply.text[:500]
    assert "Traceback" not in reply.text
    if face.startswith("mps"):
        error = reply.json()["Response"]["Error"]
        assert error["Code"] not in ("InternalError", "FailedOperation"), error
    else:
        assert 400 <= reply.status_code < 500, reply.text[:500]
    assert target.task_count() == before
    target.still_answers()


form_value = st.one_of(
    st.integers(MAX_STRING + 1, 20 * MAX_STRING).map(lambda n: "x" * n),
    st.sampled_from(["a\x00b", "\x00", "9" * 40, "٣", "６４x６４"]),
)


@FUZZ
@given(name=st.sampled_from(["prompt", "model", "n", "size", "response_format", "user", "x"]), value=form_value)
def test_hostile_form_fields_of_v1_edits_are_the_clients_error(target: Target, name: str, value: str) -> None:
    before = target.task_count()
    fields = {"prompt": "a lighthouse", "model": "tiny-random", "size": "64x64", name: value}
    files = {"image": ("a.png", b"\x89PNG\r\n\x1a\n", "image/png")}
    reply = target.client.post("/v1/images/edits", data=fields, files=files, headers=BEARER)
    assert 400 <= reply.status_code < 500, reply.text[:500]
    assert target.task_count() == before
    target.still_answers()


def test_the_examples_of_the_issue(target: Target) -> None:
    """Each case the hostile-tenant report found, named."""
    deep_additional = json.dumps("[" * 10_000 + "]" * 10_000)
    long_integer = json.dumps('{"seed": ' + "9" * 5000 + "}")
    for value in (deep_additional, long_integer):
        reply = send(target, "mps", "CreateAigcImageTask", "AdditionalParameters", value)
        assert reply.json()["Response"]["Error"]["Code"] == "InvalidParameter"
    deep_body = ("[" * 5000 + "]" * 5000).encode()
    reply = target.client.post("/v1/images/generations", content=deep_body, headers=BEARER)
    assert reply.status_code == 400 and "nested" in reply.json()["error"]["message"]
    nul_operator = json.dumps("a\x00b")
    arabic_digits = json.dumps(json.dumps({"size": "٥١٢x٥١٢"}))
    for name, value in (("Operator", nul_operator), ("AdditionalParameters", arabic_digits)):
        reply = send(target, "mps", "CreateAigcImageTask", name, value)
        assert reply.json()["Response"]["Error"]["Code"] == "InvalidParameter", reply.text
    assert target.task_count() == 0
