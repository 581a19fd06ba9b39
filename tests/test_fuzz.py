"""Property-based fuzzing of the whole request path (in-process: real app, real SQLite store).

Random and mutated bodies, headers and query strings, validly signed and not, to every action.
Properties: never a 5xx; every reply is a valid envelope with a RequestId; a request answered
with an error creates no task. FUZZ_EXAMPLES sets the number of cases per test (CI: 60).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from aigc_image.protocol import signing
from aigc_image.protocol.validation import CREATE_PARAMS
from aigc_image.store.base import TaskStore
from tests.helpers import SECRET_ID, SECRET_KEY, UUID, in_process_service

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ACTIONS = ["CreateAigcImageTask", "DescribeAigcImageTask", "DescribeAigcTaskList", "createaigcimagetask", ""]
HOST = "testserver"


@dataclass
class Target:
    client: TestClient
    store: TaskStore
    db: Path

    def task_count(self) -> int:
        import sqlite3

        with sqlite3.connect(self.db) as db:
            return int(db.execute("SELECT count(*) FROM tasks").fetchone()[0])

    def send(self, method: str, query: str, headers: dict[str, str], body: bytes) -> Any:
        before = self.task_count()
        reply = self.client.request(method, "/" + ("?" + query if query else ""), content=body, headers=headers)
        assert reply.status_code < 500, reply.text
        assert reply.status_code in (200, 408), reply.text
        assert reply.headers["content-type"] == "application/json"
        payload = reply.json()["Response"]
        assert UUID.fullmatch(payload["RequestId"])
        assert "Traceback" not in reply.text
        if "Error" in payload:
            assert set(payload["Error"]) == {"Code", "Message"}
            assert payload["Error"]["Code"] != "InternalError", payload
            assert self.task_count() == before, "an error reply must not create a task"
        return payload


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    data = tmp_path_factory.mktemp("fuzz")
    app, store = in_process_service(data)
    with TestClient(app, base_url=f"http://{HOST}") as client:
        yield Target(client, store, data / "aigc-image.db")
    store.close()


def tc3_headers(action: str, body: bytes, **overrides: str) -> dict[str, str]:
    headers = signing.sign_tc3_headers(
        secret_id=SECRET_ID, secret_key=SECRET_KEY, action=action, body=body, host=HOST, timestamp=int(time.time())
    )
    headers.update(overrides)
    return headers


# -- strategies ---------------------------------------------------------------------------

text = st.text(st.characters(codec="utf-8"), max_size=40)
scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats(allow_nan=False) | text
names = st.sampled_from([*CREATE_PARAMS, "TaskId", "Foo", "ExtraParameters.OutputFormat", ""]) | text
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(names, inner, max_size=4), max_leaves=12
)
near_valid = st.fixed_dictionaries(
    {},
    optional={
        "Prompt": text | scalars,
        "NegativePrompt": text,
        "ModelName": st.sampled_from(["tiny-random", "Hunyuan", "Kling", "", "SD-Turbo"]) | text,
        "ModelVersion": st.sampled_from(["1", "3.0", "9"]) | text,
        "OutputImageCount": st.integers(-3, 8) | scalars,
        "ExtraParameters": st.dictionaries(
            st.sampled_from(["OutputFormat", "LogoAdd", "AspectRatio", "Quality"]),
            scalars | st.sampled_from(["png", "jpeg", "gif"]),
        )
        | scalars,
        "EnhancePrompt": st.booleans() | scalars,
        "Operator": text,
        "TaskId": st.sampled_from(["4-AigcImage-" + "0" * 32, "4-AigcImage-x"]) | text,
        "Colour": scalars,
    },
)


# -- properties ---------------------------------------------------------------------------


@FUZZ
@given(action=st.sampled_from(ACTIONS), params=near_valid | json_values)
def test_validly_signed_json_of_any_shape(target: Target, action: str, params: Any) -> None:
    body = json.dumps(params).encode()
    payload = target.send("POST", "", tc3_headers(action, body), body)
    if "Error" not in payload and action == "CreateAigcImageTask":
        assert payload["TaskId"].startswith("4-AigcImage-")


@FUZZ
@given(action=st.sampled_from(ACTIONS), body=st.binary(max_size=300))
def test_validly_signed_random_bytes(target: Target, action: str, body: bytes) -> None:
    target.send("POST", "", tc3_headers(action, body), body)


@FUZZ
@given(
    params=near_valid,
    header=st.sampled_from(
        [
            "Authorization",
            "X-TC-Timestamp",
            "X-TC-Action",
            "X-TC-Version",
            "Content-Type",
            "Host",
            "X-TC-Token",
            "X-TC-Content-SHA256",
        ]
    ),
    value=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80),
)
def test_one_mutated_header_of_a_signed_request(
    target: Target, params: dict[str, Any], header: str, value: str
) -> None:
    body = json.dumps(params).encode()
    headers = tc3_headers("CreateAigcImageTask", body)
    headers[header] = value.strip() or "x"
    target.send("POST", "", headers, body)


@FUZZ
@given(params=near_valid, flip=st.integers(0, 10_000))
def test_a_signed_body_changed_by_one_byte_is_refused(target: Target, params: dict[str, Any], flip: int) -> None:
    body = json.dumps(params).encode()
    headers = tc3_headers("CreateAigcImageTask", body)
    index = flip % len(body)
    mutated = body[:index] + bytes([body[index] ^ 0x01]) + body[index + 1 :]
    payload = target.send("POST", "", headers, mutated)
    assert payload["Error"]["Code"] in ("AuthFailure.SignatureFailure", "InvalidParameter")


@FUZZ
@given(
    pairs=st.lists(st.tuples(names, text), max_size=8),
    signed=st.booleans(),
    method=st.sampled_from(["GET", "POST"]),
)
def test_query_and_form_parameters_signed_v1_or_not(
    target: Target, pairs: list[tuple[str, str]], signed: bool, method: str
) -> None:
    params = dict(pairs)
    if signed:
        params.update(
            {
                "Action": "CreateAigcImageTask",
                "Version": "2019-06-12",
                "Timestamp": str(int(time.time())),
                "Nonce": "7",
                "SecretId": SECRET_ID,
                "SignatureMethod": "HmacSHA256",
            }
        )
        params.pop("Signature", None)
        params["Signature"] = signing.v1_signature(
            SECRET_KEY, signing.v1_string_to_sign(method, HOST, params), "HmacSHA256"
        )
    encoded = urlencode(params)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    if method == "GET":
        target.send("GET", encoded, form, b"")
    else:
        target.send("POST", "", form, encoded.encode())


@FUZZ
@given(
    query=st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="#"), max_size=200),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
)
def test_raw_query_strings_and_methods(target: Target, query: str, method: str) -> None:
    target.send(method, query, {}, b"")
