"""One worker per device: ``worker.devices``, GPU pinning, and ``serve`` running two CPU workers."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from aigc_image.config import ConfigError, load_settings
from aigc_image.hardware import pin, probe, require_gpu, worker_devices
from tests.helpers import ROOT, create_request, live_server, sdk_client, server_env, wait_for, wait_until_finished


@pytest.mark.parametrize(
    ("value", "devices"),
    [("auto", ("auto",)), ("cpu,cpu", ("cpu", "cpu")), ("cuda:0, cuda:1", ("cuda:0", "cuda:1")), ("cuda", ("cuda",))],
)
def test_devices_are_a_list_or_auto(value: str, devices: tuple[str, ...]) -> None:
    settings = load_settings(environ={"AIGC_IMAGE_WORKER_DEVICES": value})
    assert settings.worker.devices == devices


@pytest.mark.parametrize(
    ("value", "fragment"), [("gpu0", "'gpu0' is not a device"), ("auto,cpu", "auto stands alone"), ("", "at least one")]
)
def test_bad_devices_are_refused_naming_the_setting(value: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=f"worker.devices.*{fragment}"):
        load_settings(environ={"AIGC_IMAGE_WORKER_DEVICES": value})


def test_on_a_host_without_gpus_auto_is_one_cpu_worker_and_a_gpu_is_refused() -> None:
    assert worker_devices(("auto",)) == ["cpu"]
    assert worker_devices(("cpu", "cpu")) == ["cpu", "cpu"]
    with pytest.raises(ConfigError, match=r"worker\.devices names cuda:1, but PyTorch sees no GPU"):
        worker_devices(("cuda:1",))
    assert probe(("cpu", "cpu")).kind == "cpu"


@pytest.mark.slow
def test_a_worker_sent_to_a_gpu_it_cannot_see_stops_at_once(tmp_path: Path) -> None:
    """Not "ready" first, to fail every task it takes later: this host has no GPU."""
    with pytest.raises(ConfigError, match="the worker's device is cuda:3, but this PyTorch is a CPU build"):
        require_gpu("cuda:3")
    for device, says in [("cuda:3", "configuration error: the worker's device is cuda:3"),
                         ("gpu0", "argument --device: 'gpu0' is not a device")]:  # fmt: skip
        command = [sys.executable, "-m", "aigc_image", "worker", "--device", device, "--data-dir", str(tmp_path)]
        result = subprocess.run(command, env=server_env(), cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and says in result.stderr, result.stderr


def test_pinning_shows_a_worker_only_its_own_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert pin("cuda:1") == "cuda:0"
    assert sys.modules["os"].environ["CUDA_VISIBLE_DEVICES"] == "1"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")  # cuda:N counts the GPUs the host already shows
    assert pin("cuda:1") == "cuda:0"
    assert sys.modules["os"].environ["CUDA_VISIBLE_DEVICES"] == "6"
    with pytest.raises(ConfigError, match="cuda:1 is not one of the GPUs CUDA_VISIBLE_DEVICES=6 shows"):
        pin("cuda:1")
    assert pin("cpu") == "cpu" and pin("auto") == "auto"


@pytest.mark.slow
def test_serve_runs_one_worker_per_device_and_both_take_tasks(tmp_path: Path) -> None:
    env = {"AIGC_IMAGE_WORKER_DEVICES": "cpu,cpu", "AIGC_IMAGE_WORKER_MAX_BATCH": "1"}
    env |= {"AIGC_IMAGE_WORKER_TORCH_THREADS": "1", "AIGC_IMAGE_WORKER_PRELOAD": "tiny-random"}
    with live_server(tmp_path / "data", env=env) as server:

        def workers() -> list[dict[str, object]]:
            return list(httpx.get(f"{server.url}/readyz", timeout=10).json().get("workers", []))

        wait_for(lambda: len(workers()) == 2 and all(w["state"] == "idle" for w in workers()))
        assert [w["device"] for w in workers()] == ["cpu", "cpu"]
        assert "workers on: cpu, cpu" in server.log.read_text()

        client = sdk_client(server)
        ids = [client.CreateAigcImageTask(create_request(Prompt=f"harbour {n}")).TaskId for n in range(12)]
        for task_id in ids:
            assert wait_until_finished(client, task_id, timeout=120)[-1].Status == "DONE"
    with sqlite3.connect(server.db_path) as db:
        ran_on = {row[0] for row in db.execute("SELECT worker_id FROM tasks")}
    assert len(ran_on) == 2, "both workers should have taken tasks"


@pytest.mark.slow
def test_a_standalone_worker_reports_the_device_it_was_given(tmp_path: Path) -> None:
    with live_server(tmp_path / "data", "--no-worker") as server:
        command = [sys.executable, "-m", "aigc_image", "worker", "--device", "cpu", "--data-dir", str(server.data_dir)]
        command += ["--config", str(server.data_dir / "config.toml")]
        with (tmp_path / "worker.log").open("ab") as log:
            worker = subprocess.Popen(command, env=server_env(), cwd=ROOT, stdout=log, stderr=log)
        try:
            wait_for(lambda: httpx.get(f"{server.url}/readyz", timeout=10).json()["ready"])
            [reported] = httpx.get(f"{server.url}/readyz", timeout=10).json()["workers"]
            assert reported["device"] == "cpu"
        finally:
            worker.terminate()
            assert worker.wait(60) == 0
