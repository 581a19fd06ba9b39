"""Recovery with real processes (issue 10): a killed worker's task runs again within a minute at
default settings; SIGTERM to serve hands the running task back; the supervisor never gives up
restarting its worker; a SQLite file deleted under the running service is noticed."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

from aigc_image.config import load_settings
from aigc_image.serve import HAND_BACK_SECONDS, WorkerSupervisor
from tests.helpers import assert_error_envelope, create_request, live_server, sdk_client, wait_for
from tests.stores import Backend
from tests.test_process import SLOW_MODEL, task_row, worker_children

pytestmark = pytest.mark.slow


def test_a_task_whose_worker_was_killed_runs_again_within_a_minute_at_default_settings(tmp_path: Path) -> None:
    registry = tmp_path / "models.toml"
    registry.write_text(SLOW_MODEL.replace("steps = 150", "steps = 600"))
    env = {"AIGC_IMAGE_MODELS_REGISTRY_FILE": str(registry)}  # lease, poll interval and the rest: defaults
    with live_server(tmp_path / "data", env=env) as server:
        backend = Backend("sqlite", f"sqlite:///{server.db_path}")
        task_id = sdk_client(server).CreateAigcImageTask(create_request(Prompt="x", ModelName="slow")).TaskId
        wait_for(lambda: task_row(backend, task_id)["status"] == "RUN")
        [first] = worker_children(server)
        os.kill(first, signal.SIGKILL)
        killed = time.monotonic()
        wait_for(lambda: task_row(backend, task_id)["attempts"] == 2 and task_row(backend, task_id)["status"] == "RUN")
        assert time.monotonic() - killed < 60
        assert "died with 1 task(s) in hand; they run again now" in server.log.read_text()


def test_sigterm_to_serve_hands_the_running_task_back(tmp_path: Path) -> None:
    registry = tmp_path / "models.toml"
    registry.write_text(SLOW_MODEL.replace("steps = 150", "steps = 900"))
    env = {"AIGC_IMAGE_MODELS_REGISTRY_FILE": str(registry), "AIGC_IMAGE_WORKER_SHUTDOWN_GRACE": "2"}
    with live_server(tmp_path / "data", env=env) as server:
        backend = Backend("sqlite", f"sqlite:///{server.db_path}")
        task_id = sdk_client(server).CreateAigcImageTask(create_request(Prompt="x", ModelName="slow")).TaskId
        wait_for(lambda: task_row(backend, task_id)["status"] == "RUN")
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(60) == 0
        row = task_row(backend, task_id)
        assert (row["status"], row["attempts"]) == ("WAIT", 0)  # handed back, the attempt not counted
        assert "handed back to the queue" in server.log.read_text()


def test_the_supervisor_gives_its_worker_the_grace_period_and_time_to_hand_back(tmp_path: Path) -> None:
    settings = load_settings(environ={"AIGC_IMAGE_WORKER_SHUTDOWN_GRACE": "45", "AIGC_IMAGE_DATA_DIR": str(tmp_path)})
    supervisor = WorkerSupervisor(settings, None, store=None)  # type: ignore[arg-type]
    assert supervisor.stop_timeout == 45 + HAND_BACK_SECONDS  # not a fixed 30 s that cuts the hand-back off


def test_the_supervisor_keeps_restarting_a_worker_that_cannot_be_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Starting the worker fails twice (the interpreter briefly missing); the supervisor backs off and
    tries again, and the third start runs."""
    attempts: list[float] = []
    real_popen = subprocess.Popen

    def flaky_popen(command: list[str], *args: Any, **kwargs: Any) -> Any:
        attempts.append(time.monotonic())
        if len(attempts) <= 2:
            raise FileNotFoundError(2, "No such file or directory", command[0])
        return real_popen(["sleep", "30"])

    monkeypatch.setattr(subprocess, "Popen", flaky_popen)
    settings = load_settings(environ={"AIGC_IMAGE_DATA_DIR": str(tmp_path)})
    supervisor = WorkerSupervisor(settings, None, store=None, first_delay=0.05)  # type: ignore[arg-type]
    supervisor.start()
    try:
        wait_for(supervisor.alive, timeout=10)
        assert len(attempts) == 3 and attempts[2] - attempts[1] >= attempts[1] - attempts[0]  # backing off
    finally:
        supervisor.stop()


def test_a_sqlite_file_deleted_under_the_service_stops_creates_and_says_why(tmp_path: Path) -> None:
    with live_server(tmp_path / "data") as server:
        wait_for(lambda: httpx.get(f"{server.url}/readyz").status_code == 200)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{server.db_path}{suffix}").unlink(missing_ok=True)
        with pytest.raises(TencentCloudSDKException) as refused:
            sdk_client(server).CreateAigcImageTask(create_request(Prompt="x"))
        assert_error_envelope(refused.value, "InternalError")
        answer = httpx.get(f"{server.url}/readyz")
        assert answer.status_code == 503 and "deleted or replaced" in answer.json()["problems"][0]
        assert server.log.read_text().count("was deleted or replaced while the service was using it") >= 1
