"""Content review through the official SDK against live servers."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

from tests.helpers import (
    ROOT,
    LiveServer,
    assert_error_envelope,
    create_request,
    live_server,
    sdk_client,
    server_env,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data = tmp_path_factory.mktemp("reviewed")
    terms = data / "casino.txt"
    terms.write_text("# the operator's own list\n賭場廣告\nslot machine\n", encoding="utf-8")
    env = {
        "AIGC_IMAGE_MODERATION_TERM_FILES": str(terms),
        "AIGC_IMAGE_MODERATION_CLASSIFIER": "tests.classifiers:policy",
    }
    with live_server(data / "data", "--no-worker", env=env) as server:
        yield server


def refused(server: LiveServer, **fields: str) -> TencentCloudSDKException:
    before = server.task_count()
    with pytest.raises(TencentCloudSDKException) as caught:
        sdk_client(server).CreateAigcImageTask(create_request(**fields))
    assert server.task_count() == before  # nothing stored
    return caught.value


@pytest.mark.parametrize(
    "fields",
    [
        {"Prompt": "ｃｈｉｌｄ　ｐｏｒｎ"},  # the default list, full width
        {"Prompt": "a lighthouse", "NegativePrompt": "c.h.i.l.d p.o.r.n"},
        {"Prompt": "兒童色情"},
        {"Prompt": "赌场广告 poster"},  # the operator's Traditional term, in Simplified
        {"Prompt": "a SLOT\u200b MACHINE"},
        {"Prompt": "a knight with a sword"},  # the classifier
    ],
)
def test_refused_prompts_store_nothing(reviewed: LiveServer, fields: dict[str, str]) -> None:
    message = assert_error_envelope(refused(reviewed, **fields), "InvalidParameter.ViolationContent")
    assert "refused by content review" in message
    assert not any(word in message for word in ("porn", "色情", "sword", "slot"))  # no hint for tuning


def test_the_audit_log_names_the_list_not_the_prompt(reviewed: LiveServer) -> None:
    refused(reviewed, Prompt="赌场广告 poster")
    lines = [line for line in reviewed.log.read_text().splitlines() if "aigc_image.audit" in line]
    assert any("by=list:casino" in line and "field=Prompt" in line for line in lines)
    assert not any("赌场" in line for line in lines)


def test_innocent_prompts_pass(reviewed: LiveServer) -> None:
    for prompt in ["a bowl of grapes", "a therapist's office", "儿童在公园里玩耍", "a lighthouse at dusk"]:
        assert sdk_client(reviewed).CreateAigcImageTask(create_request(Prompt=prompt)).TaskId


def test_an_unavailable_classifier_fails_closed(reviewed: LiveServer) -> None:
    before = len(reviewed.log.read_text())
    error = refused(reviewed, Prompt="a lighthouse (classifier-down)")
    assert "unavailable" in assert_error_envelope(error, "FailedOperation")
    written = reviewed.log.read_text()[before:]  # what the server logged for this request
    assert "review unavailable" in written and "Traceback" not in written


def test_the_session_server_reviews_with_the_default_list(server: LiveServer) -> None:
    assert_error_envelope(refused(server, Prompt="C H I L D  P O R N"), "InvalidParameter.ViolationContent")


def test_an_unreadable_term_list_stops_the_server_from_starting(tmp_path: Path) -> None:
    env = server_env({"AIGC_IMAGE_MODERATION_TERM_FILES": str(tmp_path / "missing.txt")})
    result = subprocess.run(
        [sys.executable, "-m", "aigc_image", "serve", "--port", "0", "--no-worker", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2 and "missing.txt" in result.stderr
