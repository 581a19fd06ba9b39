"""Faults found by attacking the running service (issue 10), each reproduced over real HTTP against
a live server: one tenant's bad input must not fail another's creates, and malformed requests
get their documented Code, one log line, and no traceback."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from aigc_image.protocol.signing import sign_tc3_headers, v1_signature, v1_string_to_sign
from tests.helpers import OTHER_ID, OTHER_KEY, SECRET_ID, SECRET_KEY, LiveServer, assert_error_envelope, live_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("faults"), "--no-worker") as live:
        yield live


def signed_post(
    server: LiveServer, body: bytes, secret_id: str = SECRET_ID, secret_key: str = SECRET_KEY, **headers: str
) -> httpx.Response:
    signed = sign_tc3_headers(
        secret_id=secret_id, secret_key=secret_key, action="CreateAigcImageTask", body=body, host=server.host,
        timestamp=int(time.time()),
    )  # fmt: skip
    return httpx.post(server.url, content=body, headers={**signed, **headers}, timeout=30)


BAD_BODIES = [
    b'{"Prompt": "x", "Operator": "\\ud800"}',  # a lone surrogate, as JSON lets anyone escape one
    b'{"ImageInfos": [{"ImageUrl": "https://example.com/\\udfff.png"}]}',
    b'{"Prompt": "a \\ud800 lighthouse"}',
]


def test_one_tenants_bad_rows_never_fail_another_tenants_creates(server: LiveServer) -> None:
    """Key A sends rows no database can store while key B creates; every create of B succeeds."""

    def tenant_b(index: int) -> httpx.Response:
        body = json.dumps({"Prompt": f"a lighthouse {index}"}).encode()
        return signed_post(server, body, OTHER_ID, OTHER_KEY)

    def tenant_a(index: int) -> httpx.Response:
        return signed_post(server, BAD_BODIES[index % len(BAD_BODIES)])

    with ThreadPoolExecutor(16) as pool:
        b_replies = [pool.submit(tenant_b, i) for i in range(75)]
        a_replies = [pool.submit(tenant_a, i) for i in range(75)]
        b_results = [reply.result().json()["Response"] for reply in b_replies]
        for reply in a_replies:
            message = assert_error_envelope(reply.result(), "InvalidParameter")
            assert "lone surrogate" in message
    assert all("TaskId" in result for result in b_results), [r for r in b_results if "TaskId" not in r][:3]
    assert "Traceback" not in server.log.read_text()


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"Prompt": ' + b"[" * 10_000 + b"]" * 10_000 + b"}", "InvalidParameter"),  # nested 10,000 deep
        (b'{"Prompt": "\\ud800"}', "InvalidParameter"),  # a surrogate in the prompt: not "review unavailable"
    ],
    ids=["deep-json", "surrogate-prompt"],
)
def test_malformed_bodies_get_their_code(server: LiveServer, body: bytes, code: str) -> None:
    before = server.log.read_text().count("\n")
    assert_error_envelope(signed_post(server, body), code)
    new_lines = server.log.read_text().splitlines()[before:]
    assert len(new_lines) <= 1 and not any("Traceback" in line for line in new_lines), new_lines


def test_malformed_signatures_and_timestamps_get_their_code_before_any_valid_signature(server: LiveServer) -> None:
    body = b'{"Prompt": "x"}'
    signed = sign_tc3_headers(
        secret_id=SECRET_ID, secret_key=SECRET_KEY, action="CreateAigcImageTask", body=body, host=server.host,
        timestamp=int(time.time()),
    )  # fmt: skip
    non_ascii = {**signed, "Authorization": signed["Authorization"][:-64].encode().decode() + "é" * 64}
    reply = httpx.post(server.url, content=body, headers={k: v.encode() for k, v in non_ascii.items()})
    assert_error_envelope(reply, "AuthFailure.InvalidAuthorization")
    superscript = {**signed, "X-TC-Timestamp": "²"}
    reply = httpx.post(server.url, content=body, headers={k: v.encode() for k, v in superscript.items()})
    assert_error_envelope(reply, "InvalidParameter")

    values = {
        "Action": "CreateAigcImageTask", "Version": "2019-06-12", "Timestamp": "²", "Nonce": "7",
        "SecretId": "AKIDmadeup", "Signature": "x", "Prompt": "x",
    }  # fmt: skip
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert_error_envelope(httpx.post(server.url, data=values, headers=form), "InvalidParameter")
    values |= {"Timestamp": str(int(time.time())), "SecretId": SECRET_ID, "SignatureMethod": "HmacMD5"}
    values["Signature"] = v1_signature(SECRET_KEY, v1_string_to_sign("POST", server.host, values), "HmacSHA1")
    assert_error_envelope(httpx.post(server.url, data=values, headers=form), "InvalidParameterValue")
    assert "Traceback" not in server.log.read_text()


def test_a_task_list_page_beyond_the_newest_100000_tasks_is_refused(server: LiveServer) -> None:
    body = json.dumps({"PageNum": 1001, "PageSize": 100}).encode()
    signed = sign_tc3_headers(
        secret_id=SECRET_ID, secret_key=SECRET_KEY, action="DescribeAigcTaskList", body=body, host=server.host,
        timestamp=int(time.time()),
    )  # fmt: skip
    assert_error_envelope(httpx.post(server.url, content=body, headers=signed), "InvalidParameterValue")


def test_a_reference_url_with_a_space_is_refused_at_create(server: LiveServer) -> None:
    references = [{"ImageUrl": "https://a.example/b c.png"}]
    body = json.dumps({"Prompt": "x", "ModelName": "tiny-random", "ImageInfos": references})
    assert_error_envelope(signed_post(server, body.encode()), "InvalidParameterValue")
