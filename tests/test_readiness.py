"""Preloading and readiness, with real processes: a model that cannot load is reported, not a
crash loop; /healthz is liveness, /readyz says whether tasks can run and why not."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests.helpers import create_request, live_server, sdk_client, wait_for, wait_until_finished

pytestmark = pytest.mark.slow


def test_a_model_that_cannot_preload_is_logged_once_and_the_others_are_served(tmp_path: Path) -> None:
    env = {"AIGC_IMAGE_WORKER_PRELOAD": "Hunyuan, tiny-random", "AIGC_IMAGE_MODELS_ALLOW_DOWNLOAD": "false"}
    with live_server(tmp_path / "data", env=env) as server:
        wait_for(lambda: httpx.get(f"{server.url}/readyz").status_code == 200)
        view = httpx.get(f"{server.url}/readyz").json()
        [worker] = view["workers"]
        assert worker["loaded"] == ["tiny-random:1"] and worker["state"] == "idle"
        failed = worker["failed"]  # by the model's full label, as a task for it would record it
        assert list(failed) == ["Hunyuan:3.0"] and "aigc-image pull Hunyuan:3.0" in failed["Hunyuan:3.0"]
        assert any("cannot load Hunyuan:3.0" in problem for problem in view["problems"])

        client = sdk_client(server)  # the other models keep working
        task_id = client.CreateAigcImageTask(create_request(Prompt="a lighthouse")).TaskId
        assert wait_until_finished(client, task_id)[-1].Status == "DONE"

        log = server.log.read_text()
        assert log.count("preload of Hunyuan:3.0 failed") == 1
        assert "Traceback" not in log and "exited with code" not in log
        assert len(re.findall(r"worker \S+ ready", log)) == 1  # started once: no crash loop


def test_readyz_is_503_until_a_worker_is_alive_while_healthz_is_200(tmp_path: Path) -> None:
    with live_server(tmp_path / "data", "--no-worker") as server:
        assert httpx.get(f"{server.url}/healthz").text == "ok"
        answer = httpx.get(f"{server.url}/readyz")
        assert answer.status_code == 503
        assert answer.json()["problems"] == ["no worker is alive: tasks wait until one reports"]
        client = sdk_client(server)
        client.CreateAigcImageTask(create_request(Prompt="a lighthouse"))
        assert httpx.get(f"{server.url}/readyz").json()["queue"] == {"waiting": 1, "running": 0}
