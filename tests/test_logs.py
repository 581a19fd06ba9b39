"""Logs: with log.format = json every line the processes write is one JSON object, and lines about a
request or a task carry its RequestId or TaskId; the worker starts without third-party warnings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

from tests.helpers import create_request, live_server, sdk_client, wait_until_finished

pytestmark = pytest.mark.slow


def test_json_logs_are_one_object_per_line_with_request_and_task_ids(tmp_path: Path) -> None:
    with live_server(tmp_path / "data", env={"AIGC_IMAGE_LOG_FORMAT": "json"}) as server:
        client = sdk_client(server)
        task_id = client.CreateAigcImageTask(create_request(Prompt="a lighthouse")).TaskId
        assert wait_until_finished(client, task_id)[-1].Status == "DONE"
        with pytest.raises(TencentCloudSDKException) as refused:
            client.CreateAigcImageTask(create_request(Prompt="x", OutputImageCount=99))
        lines = server.log.read_text().splitlines()
    printed = ("default model:", "workers on:", "aigc-image listening on")  # serve's own stdout lines, for people
    entries = [json.loads(line) for line in lines if not line.startswith(printed)]
    assert all({"time", "level", "logger", "message"} <= set(entry) for entry in entries)
    assert {"task_id": task_id} | {"message": f"task {task_id}: done, 1 image(s)"} in [
        {key: entry.get(key) for key in ("task_id", "message")} for entry in entries
    ]
    request_ids = [entry.get("request_id") for entry in entries if "refused" in entry["message"]]
    assert refused.value.get_request_id() in request_ids
    assert not any("torchvision" in entry["message"] or "experimental" in entry["message"] for entry in entries)
