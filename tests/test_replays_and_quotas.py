"""Replayed requests create nothing new; one key cannot fill the queue. Against live servers."""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

from aigc_image.protocol import signing
from tests.helpers import (
    OTHER_ID,
    OTHER_KEY,
    SECRET_ID,
    SECRET_KEY,
    LiveServer,
    assert_error_envelope,
    create_request,
    describe,
    live_server,
    sdk_client,
)

pytestmark = pytest.mark.slow


def captured_tc3(server: LiveServer, prompt: str) -> tuple[bytes, dict[str, str]]:
    """A signed request as an attacker on the wire would capture it."""
    body = json.dumps({"Prompt": prompt}).encode()
    headers = signing.sign_tc3_headers(
        secret_id=SECRET_ID, secret_key=SECRET_KEY, action="CreateAigcImageTask", body=body, host=server.host,
        timestamp=int(time.time()),
    )  # fmt: skip
    headers["X-TC-TraceId"] = str(uuid.uuid4())  # as the SDK adds to every call
    return body, headers


def send(server: LiveServer, body: bytes, headers: dict[str, str]) -> str:
    reply = httpx.post(server.url + "/", content=body, headers=headers, timeout=30).json()["Response"]
    assert "Error" not in reply, reply
    return str(reply["TaskId"])


def test_a_replayed_request_returns_the_original_task(server: LiveServer) -> None:
    body, headers = captured_tc3(server, "replay me")
    before = server.task_count()
    first = send(server, body, headers)
    assert [send(server, body, headers) for _ in range(3)] == [first] * 3
    assert server.task_count() == before + 1


def test_concurrent_replays_make_one_task(server: LiveServer) -> None:
    body, headers = captured_tc3(server, "concurrent replay")
    before = server.task_count()
    with ThreadPoolExecutor(8) as pool:
        task_ids = set(pool.map(lambda _: send(server, body, headers), range(16)))
    assert len(task_ids) == 1
    assert server.task_count() == before + 1


def test_same_second_calls_with_the_same_parameters_are_separate_tasks(server: LiveServer) -> None:
    """Two SDK calls in one second sign identically; only their X-TC-TraceId differs."""
    body, headers = captured_tc3(server, "five variations, please")
    first = send(server, body, headers)
    assert send(server, body, {**headers, "X-TC-TraceId": str(uuid.uuid4())}) != first


def test_a_replayed_v1_request_returns_the_original_task(server: LiveServer) -> None:
    params = {
        "Action": "CreateAigcImageTask", "Version": "2019-06-12", "Timestamp": str(int(time.time())),
        "Nonce": "4242", "SecretId": SECRET_ID, "SignatureMethod": "HmacSHA256", "Prompt": "v1 replay",
    }  # fmt: skip
    params["Signature"] = signing.v1_signature(
        SECRET_KEY, signing.v1_string_to_sign("POST", server.host, params), "HmacSHA256"
    )
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    replies = [httpx.post(server.url + "/", content=urlencode(params), headers=form).json() for _ in range(2)]
    assert replies[0]["Response"]["TaskId"] == replies[1]["Response"]["TaskId"]


def test_a_re_signed_request_is_a_new_task(server: LiveServer) -> None:
    """What the SDK's own retries do a second later: same parameters, a fresh timestamp and signature."""
    body = json.dumps({"Prompt": "same words"}).encode()
    now = int(time.time())
    task_ids = set()
    for timestamp in (now - 1, now):
        headers = signing.sign_tc3_headers(
            secret_id=SECRET_ID, secret_key=SECRET_KEY, action="CreateAigcImageTask", body=body, host=server.host,
            timestamp=timestamp,
        )  # fmt: skip
        task_ids.add(send(server, body, headers))
    assert len(task_ids) == 2


def test_a_key_cannot_fill_the_queue(tmp_path: Path) -> None:
    env = {"AIGC_IMAGE_API_MAX_ACTIVE_TASKS_PER_KEY": "2"}
    with live_server(tmp_path / "capped", "--no-worker", env=env) as server:
        client = sdk_client(server)
        task_ids = [client.CreateAigcImageTask(create_request(Prompt=f"p{i}")).TaskId for i in range(2)]
        with pytest.raises(TencentCloudSDKException) as caught:
            client.CreateAigcImageTask(create_request(Prompt="one too many"))
        assert_error_envelope(caught.value, "LimitExceeded.CreateTask")
        assert server.task_count() == 2
        assert describe(client, task_ids[0]).Status == "WAIT"  # polling is unaffected
        other = sdk_client(server, OTHER_ID, OTHER_KEY)
        assert other.CreateAigcImageTask(create_request(Prompt="another key")).TaskId
