"""DescribeAigcTaskStatus and DescribeAigcTaskList for image tasks, through the official SDK."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.mps.v20190612 import models

from tests.helpers import (
    OTHER_ID,
    OTHER_KEY,
    LiveServer,
    assert_error_envelope,
    create_request,
    live_server,
    sdk_client,
    wait_until_finished,
)

pytestmark = pytest.mark.slow

MODELS = """
[[models]]
name = "slow"
version = "1"
engine = "tiny-random"
steps = 300
width = 64
height = 64

[[models]]
name = "broken"
version = "1"
engine = "diffusers"
source = "/nonexistent/weights"
pipeline = "StableDiffusionPipeline"
"""
TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("views")
    (root / "models.toml").write_text(MODELS)
    with live_server(root / "data", env={"AIGC_IMAGE_MODELS_REGISTRY_FILE": str(root / "models.toml")}) as live:
        yield live


def status(server: LiveServer, task_id: str, **key: str) -> Any:
    request = models.DescribeAigcTaskStatusRequest()
    request.TaskId = task_id
    client = sdk_client(server, key["id"], key["secret"]) if key else sdk_client(server)
    return client.DescribeAigcTaskStatus(request)


def task_list(server: LiveServer, **params: Any) -> Any:
    request = models.DescribeAigcTaskListRequest()
    request.from_json_string(json.dumps(params))
    return sdk_client(server, OTHER_ID, OTHER_KEY).DescribeAigcTaskList(request)


def test_a_running_task_reports_its_progress_then_finishes(server: LiveServer) -> None:
    client = sdk_client(server)
    task_id = client.CreateAigcImageTask(create_request(Prompt="a lighthouse", ModelName="slow")).TaskId
    progress_seen = []
    # Progress can only be watched by asking: this API has no push, so a client samples it.
    deadline = time.monotonic() + 120
    while (reply := status(server, task_id)).TaskStatus != "FINISHED":
        assert reply.TaskStatus in ("PENDING", "RUNNING") and time.monotonic() < deadline
        info = json.loads(reply.TaskInfo)
        assert info["steps"] == 300
        if reply.TaskStatus == "RUNNING" and 0 < info["progress"] < 100:
            progress_seen.append(info["progress"])
            assert TIME.fullmatch(reply.ScheduledTime) and reply.OutputUrl is None
        time.sleep(0.1)
    assert progress_seen, "no progress was reported while the task ran"
    assert progress_seen == sorted(progress_seen)
    assert json.loads(reply.TaskInfo) == {"step": 300, "steps": 300, "progress": 100}
    assert reply.TaskId == task_id and reply.TaskType == "AigcImage" and reply.TaskResultCode == 0
    assert all(TIME.fullmatch(t) for t in (reply.CreateTime, reply.ScheduledTime, reply.FinishedTime))
    assert reply.OutputUrl == wait_until_finished(client, task_id)[-1].ImageUrls[0]
    body = json.loads(reply.RequestBody)
    assert body["Prompt"] == "a lighthouse" and body["ModelName"] == "slow"
    assert isinstance(json.loads(body["AdditionalParameters"])["seed"], int)


def test_a_failed_task_is_failed_with_its_reason(server: LiveServer) -> None:
    task_id = sdk_client(server).CreateAigcImageTask(create_request(Prompt="x", ModelName="broken")).TaskId
    assert wait_until_finished(sdk_client(server), task_id)[-1].Status == "FAIL"
    reply = status(server, task_id)
    assert reply.TaskStatus == "FAILED" and reply.TaskResultCode == -1
    assert "/nonexistent/weights" in reply.TaskResultMsg and reply.OutputUrl is None


def test_another_keys_task_is_not_found(server: LiveServer) -> None:
    task_id = sdk_client(server).CreateAigcImageTask(create_request(Prompt="mine")).TaskId
    with pytest.raises(TencentCloudSDKException) as refused:
        status(server, task_id, id=OTHER_ID, secret=OTHER_KEY)
    assert_error_envelope(refused.value, "ResourceNotFound.TaskNotFound")


def test_the_list_pages_newest_first_and_filters(server: LiveServer) -> None:
    client = sdk_client(server, OTHER_ID, OTHER_KEY)
    ids = [client.CreateAigcImageTask(create_request(Prompt=f"p{n}", OutputImageCount=2)).TaskId for n in range(3)]
    for task_id in ids:
        assert wait_until_finished(client, task_id)[-1].Status == "DONE"

    first = task_list(server, PageNum=1, PageSize=2)
    assert (first.Total, first.PageNum, first.PageSize) == (3, 1, 2)
    assert [t.TaskId for t in first.Tasks] == [ids[2], ids[1]]
    assert all(t.TaskStatus == "FINISHED" and len(t.Urls) == 2 and t.TaskType == "AigcImage" for t in first.Tasks)
    assert [t.TaskId for t in task_list(server, PageNum=2, PageSize=2).Tasks] == [ids[0]]
    assert task_list(server).PageSize == 10 and task_list(server).Total == 3

    assert task_list(server, QueryTaskFilter={"TaskStatus": "FINISHED"}).Total == 3
    assert task_list(server, QueryTaskFilter={"TaskStatus": "RUNNING"}).Total == 0
    assert task_list(server, QueryTaskFilter={"TaskStatus": "STOP"}).Total == 0
    assert [t.TaskId for t in task_list(server, QueryTaskFilter={"TaskId": ids[1]}).Tasks] == [ids[1]]
    assert task_list(server, QueryTaskFilter={"TaskType": "AigcImage"}).Total == 3
    assert task_list(server, QueryTaskFilter={"TaskType": "AIDrama"}).Total == 0


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"PageSize": 0}, "InvalidParameterValue"),
        ({"PageSize": 101}, "InvalidParameterValue"),
        ({"PageNum": 0}, "InvalidParameterValue"),
        ({"QueryTaskFilter": {"TaskStatus": "DONE"}}, "InvalidParameterValue"),
        ({"QueryTaskFilter": {"Ratio": "16:9"}}, "UnsupportedOperation"),
    ],
)
def test_bad_list_requests_are_refused(server: LiveServer, params: dict[str, Any], code: str) -> None:
    with pytest.raises(TencentCloudSDKException) as refused:
        task_list(server, **params)
    assert_error_envelope(refused.value, code)


def test_the_request_body_echoes_every_resolved_parameter(server: LiveServer) -> None:
    fields = {
        "Prompt": "a lighthouse", "ModelName": "tiny-random", "NegativePrompt": "fog",
        "ImageInfos": [{"ImageUrl": "https://example.com/a.png"}], "OutputImageCount": 2,
        "AdditionalParameters": json.dumps({"seed": 7, "strength": 0.5}),
        "ExtraParameters": {"AspectRatio": "16:9", "OutputFormat": "jpeg"},
    }  # fmt: skip
    task_id = sdk_client(server).CreateAigcImageTask(create_request(**fields)).TaskId
    body = json.loads(status(server, task_id).RequestBody)
    assert body["ImageInfos"] == [{"ImageUrl": "https://example.com/a.png"}]
    assert json.loads(body["AdditionalParameters"]) == {
        "size": "80x48", "seed": 7, "steps": 10, "guidance_scale": 6.0, "strength": 0.5,
    }  # fmt: skip
    assert (body["ModelVersion"], body["NegativePrompt"], body["OutputImageCount"]) == ("1", "fog", 2)
    assert body["ExtraParameters"] == {"AspectRatio": "16:9", "Resolution": "", "LogoAdd": 0, "OutputFormat": "jpeg"}
