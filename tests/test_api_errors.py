"""Every error Code, provoked through the official SDK (or raw HTTP where the SDK cannot send it).

Each refused request must leave the store untouched: no task is created by a bad request.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tencentcloud.common import credential
from tencentcloud.common.common_client import CommonClient
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile

from aigc_image.protocol.signing import sign_tc3_headers
from tests.helpers import (
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


def common_client(server: LiveServer, version: str = "2019-06-12") -> CommonClient:
    profile = ClientProfile(httpProfile=HttpProfile(protocol="http", endpoint=server.host))
    return CommonClient("mps", version, credential.Credential(SECRET_ID, SECRET_KEY), "ap-guangzhou", profile=profile)


def signed_post(
    server: LiveServer, body: bytes, *, action: str = "CreateAigcImageTask", timestamp: int | None = None,
    **header_overrides: str,
) -> httpx.Response:  # fmt: skip
    headers = sign_tc3_headers(
        secret_id=SECRET_ID, secret_key=SECRET_KEY, action=action, body=body, host=server.host,
        timestamp=int(time.time()) if timestamp is None else timestamp,
    )  # fmt: skip
    headers.update(header_overrides)
    return httpx.post(server.url + "/", content=body, headers=headers, timeout=30)


@pytest.fixture
def unchanged(server: LiveServer) -> Iterator[None]:
    """Asserts the test created no task."""
    before = server.task_count()
    yield
    assert server.task_count() == before


def sdk_error(call: Any, *args: Any) -> TencentCloudSDKException:
    with pytest.raises(TencentCloudSDKException) as caught:
        call(*args)
    return caught.value


# -- authentication -------------------------------------------------------------------


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    ("secret_id", "secret_key", "token", "code"),
    [
        (SECRET_ID, "not-the-key", None, "AuthFailure.SignatureFailure"),
        ("AKIDnobodyhasthiskey000000000000", SECRET_KEY, None, "AuthFailure.SecretIdNotFound"),
        ("AKID!not#an$id", SECRET_KEY, None, "AuthFailure.InvalidSecretId"),
        (SECRET_ID, SECRET_KEY, "sts-session-token", "AuthFailure.TokenFailure"),
    ],
)
def test_auth_failures_through_the_sdk(
    server: LiveServer, secret_id: str, secret_key: str, token: str | None, code: str
) -> None:
    client = sdk_client(server, secret_id, secret_key, token=token)
    assert_error_envelope(sdk_error(client.CreateAigcImageTask, create_request(Prompt="x")), code)


@pytest.mark.usefixtures("unchanged")
def test_expired_timestamp(server: LiveServer) -> None:
    reply = signed_post(server, b'{"Prompt": "x"}', timestamp=int(time.time()) - 301)
    assert_error_envelope(reply, "AuthFailure.SignatureExpire")


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    "authorization", ["", "TC3-HMAC-SHA256", "Basic dXNlcjpwYXNz", "TC3-HMAC-SHA256 Credential=AKIDx/2026-01-01/mps"]
)
def test_malformed_authorization(server: LiveServer, authorization: str) -> None:
    reply = signed_post(server, b'{"Prompt": "x"}', Authorization=authorization)
    assert_error_envelope(reply, "AuthFailure.InvalidAuthorization")


@pytest.mark.usefixtures("unchanged")
def test_unsigned_json_request(server: LiveServer) -> None:
    reply = httpx.post(server.url + "/", json={"Prompt": "x"}, headers={"X-TC-Action": "CreateAigcImageTask"})
    assert_error_envelope(reply, "AuthFailure.InvalidAuthorization")


@pytest.mark.usefixtures("unchanged")
def test_body_changed_after_signing(server: LiveServer) -> None:
    headers = sign_tc3_headers(
        secret_id=SECRET_ID, secret_key=SECRET_KEY, action="CreateAigcImageTask", body=b'{"Prompt": "a"}',
        host=server.host, timestamp=int(time.time()),
    )  # fmt: skip
    reply = httpx.post(server.url + "/", content=b'{"Prompt": "b"}', headers=headers)
    assert_error_envelope(reply, "AuthFailure.SignatureFailure")


# -- action, version, method ------------------------------------------------------------


@pytest.mark.usefixtures("unchanged")
def test_invalid_action(server: LiveServer) -> None:
    assert_error_envelope(sdk_error(common_client(server).call_json, "CreateAigcMusicTask", {}), "InvalidAction")


@pytest.mark.usefixtures("unchanged")
def test_no_such_version(server: LiveServer) -> None:
    client = common_client(server, version="2017-03-12")
    assert_error_envelope(sdk_error(client.call_json, "CreateAigcImageTask", {"Prompt": "x"}), "NoSuchVersion")


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS"])
def test_unsupported_protocol(server: LiveServer, method: str) -> None:
    assert_error_envelope(httpx.request(method, server.url + "/"), "UnsupportedProtocol")


# -- parameters ---------------------------------------------------------------------------


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({}, "MissingParameter"),
        ({"Prompt": ""}, "MissingParameter"),
        ({"Prompt": "   \n\t"}, "MissingParameter"),
        ({"Prompt": "x" * 1001}, "InvalidParameterValue"),
        ({"Prompt": "x", "NegativePrompt": "y" * 1001}, "InvalidParameterValue"),
        ({"Prompt": "nul \u0000 inside"}, "InvalidParameter"),
        ({"Prompt": "x", "Operator": "nul \u0000"}, "InvalidParameter"),  # one rule for every string
        ({"Prompt": "x", "OutputImageCount": 0}, "InvalidParameterValue"),
        ({"Prompt": "x", "OutputImageCount": -1}, "InvalidParameterValue"),
        ({"Prompt": "x", "OutputImageCount": 5}, "InvalidParameterValue"),
        ({"Prompt": "x", "ExtraParameters": {"OutputFormat": "gif"}}, "InvalidParameterValue"),
        ({"Prompt": "x", "ExtraParameters": {"LogoAdd": 2}}, "InvalidParameterValue"),
        ({"Prompt": "x", "Operator": "o" * 257}, "InvalidParameterValue"),
        ({"Prompt": "x", "OutputImageCount": "two"}, "InvalidParameter"),
        ({"Prompt": "x", "OutputImageCount": 1.5}, "InvalidParameter"),
        ({"Prompt": 42}, "InvalidParameter"),
        ({"Prompt": "x", "EnhancePrompt": "no"}, "InvalidParameter"),
        ({"Prompt": "x", "ExtraParameters": []}, "InvalidParameter"),
        ({"Prompt": "x", "Colour": "red"}, "UnknownParameter"),
        ({"Prompt": "x", "ExtraParameters": {"Quality": "high"}}, "UnknownParameter"),
        ({"Prompt": "x", "ModelName": "Kling"}, "InvalidParameter.ModelNotSupported"),
        ({"Prompt": "x", "ModelName": "Hunyuan", "ModelVersion": "9.9"}, "InvalidParameter.ModelNotSupported"),
        ({"Prompt": "x", "ModelName": "SD-Turbo", "NegativePrompt": "blur"}, "InvalidParameter.ModelNotSupported"),
        ({"Prompt": "x", "SceneType": "cubemap"}, "InvalidParameterValue"),
        (
            {"Prompt": "x", "ModelName": "Hunyuan", "ImageInfos": [{"ImageUrl": "https://example.com/a.png"}]},
            "InvalidParameter.ModelNotSupported",
        ),
        (
            {
                "Prompt": "x",
                "ModelName": "Qwen",
                "ImageInfos": [{"ImageUrl": "https://example.com/a.png"}],
                "AdditionalParameters": '{"strength": 0.5}',
            },
            "InvalidParameter.ModelNotSupported",
        ),
        ({"Prompt": "x", "SceneType": "3d_panorama", "ExtraParameters": {"AspectRatio": "16:9"}}, "InvalidParameter"),
        (
            {"Prompt": "x", "SceneType": "3d_panorama", "AdditionalParameters": '{"size": "128x128"}'},
            "InvalidParameterValue",
        ),
        (
            {"Prompt": "x", "ImageInfos": [{"ImageUrl": "https://example.com/a.png", "ReferenceType": "x"}]},
            "UnsupportedOperation",
        ),
        ({"Prompt": "x", "ExtraParameters": {"AspectRatio": "5:4"}}, "InvalidParameterValue"),
        ({"Prompt": "x", "ExtraParameters": {"Resolution": "8K"}}, "InvalidParameterValue"),
        ({"Prompt": "x", "ExtraParameters": {"Resolution": "1K"}}, "InvalidParameter.ModelNotSupported"),
        ({"Prompt": "x", "AdditionalParameters": "{not json"}, "InvalidParameter"),
        ({"Prompt": "x", "AdditionalParameters": '["size"]'}, "InvalidParameter"),
        ({"Prompt": "x", "AdditionalParameters": '{"colour": "red"}'}, "InvalidParameter"),
        ({"Prompt": "x", "AdditionalParameters": '{"size": "big"}'}, "InvalidParameter"),
        ({"Prompt": "x", "AdditionalParameters": '{"size": "2048x16"}'}, "InvalidParameterValue"),
        ({"Prompt": "x", "AdditionalParameters": '{"seed": -1}'}, "InvalidParameterValue"),
        ({"Prompt": "x", "AdditionalParameters": '{"seed": "7"}'}, "InvalidParameter"),
        ({"Prompt": "x", "AdditionalParameters": '{"steps": 0}'}, "InvalidParameterValue"),
        ({"Prompt": "x", "AdditionalParameters": '{"guidance_scale": "high"}'}, "InvalidParameter"),
        (
            {"Prompt": "x", "AdditionalParameters": '{"size": "64x64"}', "ExtraParameters": {"AspectRatio": "1:1"}},
            "InvalidParameter",
        ),
        (
            {"Prompt": "x", "ModelName": "Hunyuan", "AdditionalParameters": '{"size": "2048x2048"}'},
            "InvalidParameterValue",  # MPS documents width × height ≤ 1024 × 1024 for Hunyuan 3.0
        ),
        ({"Prompt": "x", "StoreCosParam": {"CosBucketName": "b", "CosBucketRegion": "r"}}, "UnsupportedOperation"),
    ],
)
def test_create_refuses_bad_input(server: LiveServer, params: dict[str, Any], code: str) -> None:
    message = assert_error_envelope(sdk_error(common_client(server).call_json, "CreateAigcImageTask", params), code)
    if code in ("UnsupportedOperation", "UnknownParameter"):
        assert any(name in message for name in ("SceneType", "Enhance", "Image", "Extra", "Additional", "Store", "Col"))


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "InvalidParameter"),
        (b'["Prompt", "x"]', "InvalidParameter"),
        (b'"just a string"', "InvalidParameter"),
        (b"\xff\xfe garbage", "InvalidParameter"),
    ],
)
def test_malformed_json_bodies(server: LiveServer, body: bytes, code: str) -> None:
    assert_error_envelope(signed_post(server, body), code)


@pytest.mark.usefixtures("unchanged")
def test_typed_sdk_model_errors_reach_the_client(server: LiveServer) -> None:
    client = sdk_client(server)
    error = sdk_error(client.CreateAigcImageTask, create_request(Prompt="x", ModelName="wand-vega-image"))
    message = assert_error_envelope(error, "InvalidParameter.ModelNotSupported")
    assert "tiny-random" in message  # the reply lists what is available


# -- request size -------------------------------------------------------------------------


@pytest.mark.usefixtures("unchanged")
def test_json_body_over_10_mb(server: LiveServer) -> None:
    body = json.dumps({"Prompt": "x" * (10 * 1024 * 1024)}).encode()
    assert_error_envelope(signed_post(server, body), "RequestSizeLimitExceeded")


@pytest.mark.usefixtures("unchanged")
def test_chunked_body_over_the_limit_is_stopped_while_streaming(server: LiveServer) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"Prompt": "'
        for _ in range(11):
            yield b"x" * (1024 * 1024)
        yield b'"}'

    reply = httpx.post(server.url + "/", content=chunks(), headers={"Content-Type": "application/json"})
    assert_error_envelope(reply, "RequestSizeLimitExceeded")


@pytest.mark.usefixtures("unchanged")
def test_form_body_over_1_mb_and_query_over_32_kb(server: LiveServer) -> None:
    form = b"Prompt=" + b"x" * (1024 * 1024)
    reply = httpx.post(server.url + "/", content=form, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert_error_envelope(reply, "RequestSizeLimitExceeded")
    assert_error_envelope(httpx.get(server.url + "/?Prompt=" + "x" * 33 * 1024), "RequestSizeLimitExceeded")


# -- DescribeAigcImageTask ----------------------------------------------------------------


def test_describe_errors(server: LiveServer) -> None:
    client = common_client(server)
    assert_error_envelope(sdk_error(client.call_json, "DescribeAigcImageTask", {}), "MissingParameter")
    assert_error_envelope(
        sdk_error(client.call_json, "DescribeAigcImageTask", {"TaskId": "../../etc/passwd"}), "InvalidParameterValue"
    )
    unknown = "4-AigcImage-" + "f" * 32
    assert_error_envelope(sdk_error(describe, sdk_client(server), unknown), "ResourceNotFound.TaskNotFound")


# -- rate limit ---------------------------------------------------------------------------


def test_rate_limit_and_forged_requests_do_not_drain_it(tmp_path: Path) -> None:
    limits = {"AIGC_IMAGE_API_RATE_LIMIT": "1", "AIGC_IMAGE_API_RATE_BURST": "5"}
    with live_server(tmp_path / "limited", "--no-worker", env=limits) as server:
        forged = sdk_client(server, SECRET_ID, "forged-key")
        for _ in range(30):  # an attacker naming our SecretId without its key
            error = sdk_error(forged.CreateAigcImageTask, create_request(Prompt="x"))
            assert_error_envelope(error, "AuthFailure.SignatureFailure")
        client = sdk_client(server)
        started = time.monotonic()
        accepted, limited = 0, []
        for _ in range(30):
            try:
                client.CreateAigcImageTask(create_request(Prompt="x"))
                accepted += 1
            except TencentCloudSDKException as exc:
                limited.append(exc)
        refill = int(time.monotonic() - started) + 1  # tokens that may have come back meanwhile
        assert 5 <= accepted <= 5 + refill, (accepted, refill)
        assert_error_envelope(limited[0], "RequestLimitExceeded")
        assert server.task_count() == accepted
        # Buckets are per action: polling still works while creates are limited.
        assert_error_envelope(sdk_error(describe, client, "4-AigcImage-" + "0" * 32), "ResourceNotFound.TaskNotFound")
