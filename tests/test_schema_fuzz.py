"""Schema-driven fuzzing: schemathesis generates requests from the OpenAPI description
(`aigc-image openapi`), valid and invalid, and each is TC3-signed and sent to `/` like a client.

Checks: no 5xx, a valid envelope with a RequestId on every reply, an error never creates a task,
and a request that matches the schema is never answered with a parameter-type error.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from schemathesis.core import NOT_SET
from schemathesis.generation import GenerationMode
from starlette.testclient import TestClient

from aigc_image.protocol import signing
from aigc_image.protocol.openapi import openapi_description
from tests.helpers import SECRET_ID, SECRET_KEY, UUID, in_process_service

# The MPS actions (pseudo-paths /<Action>, sent to / signed); the /v1 endpoints have their own tests.
schema = schemathesis.openapi.from_dict(openapi_description()).include(path_regex=r"^/[A-Z]")
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "60")),
    deterministic=True,
)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Path]]:
    data = tmp_path_factory.mktemp("schema-fuzz")
    service, store = in_process_service(data)
    with TestClient(service, base_url="http://testserver") as client:
        yield client, data / "aigc-image.db"
    store.close()


def task_count(db: Path) -> int:
    with sqlite3.connect(db) as connection:
        return int(connection.execute("SELECT count(*) FROM tasks").fetchone()[0])


CREATED: set[str] = set()


@schema.parametrize()
def test_generated_requests(case: Any, app: tuple[TestClient, Path]) -> None:
    client, db = app
    action = case.operation.path.lstrip("/")
    if case.body is NOT_SET:
        body = b""
    elif isinstance(case.body, bytes):  # negative cases include raw, non-JSON payloads
        body = case.body
    else:
        body = json.dumps(case.body).encode()
    headers = signing.sign_tc3_headers(
        secret_id=SECRET_ID, secret_key=SECRET_KEY, action=action, body=body, host="testserver",
        timestamp=int(time.time()),
    )  # fmt: skip
    before = task_count(db)
    reply = client.post("/", content=body, headers=headers)
    assert reply.status_code == 200 and reply.headers["content-type"] == "application/json"
    response = reply.json()["Response"]
    assert UUID.fullmatch(response["RequestId"])
    if "Error" in response:
        assert response["Error"]["Code"] != "InternalError", response
        assert task_count(db) == before
        # Valid by the schema: a value may be out of range, but never of the wrong shape. The
        # exception: AdditionalParameters is JSON inside a string, which the schema cannot describe.
        positive = case.meta.generation.mode is GenerationMode.POSITIVE  # type: ignore[union-attr]
        if positive and "AdditionalParameters" not in response["Error"]["Message"]:
            assert response["Error"]["Code"] not in ("InvalidParameter", "UnknownParameter"), (case.body, response)
    elif action == "CreateAigcImageTask":
        # A byte-identical signed request (the same body within the same second) is a replay: it
        # answers with the task it created the first time and creates nothing.
        replayed = response["TaskId"] in CREATED
        assert task_count(db) == before + (0 if replayed else 1)
        CREATED.add(response["TaskId"])
