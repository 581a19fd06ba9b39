"""EnhancePrompt: the built-in rewriter, and an OpenAI-compatible LLM when configured.

No LLM can run here, so the LLM is a loopback server speaking the chat-completions protocol
(the one stand-in in these tests); the service, SDK and content review around it are real.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.mps.v20190612 import models

from aigc_image.enhance import rewrite
from tests.helpers import (
    LiveServer,
    assert_error_envelope,
    create_request,
    download,
    live_server,
    sdk_client,
    wait_until_finished,
)
from tests.loopback import QuietHandler, http_server


def test_the_built_in_rewrite_is_deterministic_and_keeps_the_language() -> None:
    assert rewrite("  a red  fox. ", "natural") == rewrite("a red fox", "natural")
    assert rewrite("a red fox", "natural").startswith("a red fox. A clear main subject")
    assert rewrite("一只红狐狸", "natural") == "一只红狐狸。画面主体清晰，细节丰富，光影自然，构图均衡，高清画质。"
    assert (
        rewrite("red fox, snow", "tags")
        == "red fox, snow, masterpiece, best quality, highly detailed, sharp focus, natural lighting"
    )


def request_body(server: LiveServer, task_id: str) -> dict[str, Any]:
    request = models.DescribeAigcTaskStatusRequest()
    request.TaskId = task_id
    return dict(json.loads(sdk_client(server).DescribeAigcTaskStatus(request).RequestBody))


def generate(server: LiveServer, **fields: Any) -> tuple[str, np.ndarray]:
    client = sdk_client(server)
    task_id = client.CreateAigcImageTask(create_request(**fields)).TaskId
    final = wait_until_finished(client, task_id)[-1]
    assert final.Status == "DONE", final.Message
    return task_id, np.asarray(Image.open(io.BytesIO(download(final.ImageUrls[0]))).convert("RGB"), dtype=np.int16)


@pytest.mark.slow
def test_enhance_prompt_uses_and_records_the_built_in_rewrite(server: LiveServer) -> None:
    seeded = {"Prompt": "a red fox", "AdditionalParameters": json.dumps({"seed": 9})}
    plain_id, plain = generate(server, **seeded)
    enhanced_id, enhanced = generate(server, EnhancePrompt=True, **seeded)
    assert request_body(server, enhanced_id)["EnhancedPrompt"] == rewrite("a red fox", "tags")  # tiny-random: tags
    assert "EnhancedPrompt" not in request_body(server, plain_id)
    assert not np.array_equal(plain, enhanced)  # the model saw another prompt


class FakeLlm:
    """Answers /v1/chat/completions: "LLM: <prompt>", a sword for knights, HTTP 500 for "fail"."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.url = ""

    def handler(self) -> type[QuietHandler]:
        requests = self.requests

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                requests.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
                prompt = body["messages"][-1]["content"]
                if "fail" in prompt:
                    self.send_response(500)
                    self.end_headers()
                    return
                text = f"{prompt}, holding a sword" if "knight" in prompt else f"LLM: {prompt}, golden hour"
                answer = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        return Handler


@pytest.fixture(scope="module")
def llm() -> Iterator[FakeLlm]:
    fake = FakeLlm()
    with http_server(fake.handler()) as base:
        fake.url = f"{base}/v1"
        yield fake


@pytest.fixture(scope="module")
def llm_server(tmp_path_factory: pytest.TempPathFactory, llm: FakeLlm) -> Iterator[LiveServer]:
    env = {
        "AIGC_IMAGE_ENHANCE_LLM_URL": llm.url,
        "AIGC_IMAGE_ENHANCE_LLM_MODEL": "qwen2.5-7b-instruct",
        "AIGC_IMAGE_ENHANCE_LLM_API_KEY": "sk-test",
        "AIGC_IMAGE_MODERATION_CLASSIFIER": "tests.classifiers:policy",  # refuses swords
    }
    with live_server(tmp_path_factory.mktemp("llm"), env=env) as server:
        yield server


@pytest.mark.slow
def test_the_llm_rewrites_the_prompt_and_the_result_is_recorded(llm_server: LiveServer, llm: FakeLlm) -> None:
    task_id, _ = generate(llm_server, Prompt="a cat", EnhancePrompt=True)
    assert request_body(llm_server, task_id)["EnhancedPrompt"] == "LLM: a cat, golden hour"
    sent = llm.requests[-1]
    assert sent["path"] == "/v1/chat/completions" and sent["auth"] == "Bearer sk-test"
    assert sent["model"] == "qwen2.5-7b-instruct" and sent["messages"][-1]["content"] == "a cat"


@pytest.mark.slow
def test_an_enhanced_prompt_is_reviewed_like_the_original(llm_server: LiveServer) -> None:
    client = sdk_client(llm_server)
    assert client.CreateAigcImageTask(create_request(Prompt="a knight")).TaskId  # fine without enhancement
    with pytest.raises(TencentCloudSDKException) as refused:
        client.CreateAigcImageTask(create_request(Prompt="a knight", EnhancePrompt=True))
    assert "EnhancedPrompt" in assert_error_envelope(refused.value, "InvalidParameter.ViolationContent")


@pytest.mark.slow
def test_when_the_llm_fails_the_built_in_rewrite_is_used(llm_server: LiveServer) -> None:
    started = time.monotonic()
    task_id, _ = generate(llm_server, Prompt="fail please", EnhancePrompt=True)
    assert request_body(llm_server, task_id)["EnhancedPrompt"] == rewrite("fail please", "tags")
    assert time.monotonic() - started < 60
