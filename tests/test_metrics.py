"""Prometheus metrics: every named series moves when a task runs, worker-side figures reach serve's
/metrics, a standalone worker serves its own, and only listed networks may read them."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import ROOT, create_request, live_server, sdk_client, server_env, wait_for, wait_until_finished

pytestmark = pytest.mark.slow

Sample = tuple[str, tuple[tuple[str, str], ...]]


def scrape(url: str) -> dict[Sample, float]:
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict[Sample, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_each_named_series_moves_when_a_task_runs(tmp_path: Path) -> None:
    with live_server(tmp_path / "data") as server:
        client = sdk_client(server)
        wait_for(lambda: value(scrape(server.url), "aigc_image_workers", state="idle") == 1)
        before = scrape(server.url)
        task_id = client.CreateAigcImageTask(create_request(Prompt="a lighthouse", OutputImageCount=2)).TaskId
        assert wait_until_finished(client, task_id)[-1].Status == "DONE"
        after = scrape(server.url)
    model = {"model": "tiny-random:1"}
    moved = {
        "requests": value(after, "aigc_image_requests_total", action="CreateAigcImageTask", code="OK")
        - value(before, "aigc_image_requests_total", action="CreateAigcImageTask", code="OK"),
        "finished": value(after, "aigc_image_tasks_finished_total", status="DONE", **model)
        - value(before, "aigc_image_tasks_finished_total", status="DONE", **model),
        "images": value(after, "aigc_image_images_total", **model) - value(before, "aigc_image_images_total", **model),
        "queue wait": value(after, "aigc_image_queue_wait_seconds_count", weight="1")
        - value(before, "aigc_image_queue_wait_seconds_count", weight="1"),
        "model loads": value(after, "aigc_image_model_loads_total", **model)
        - value(before, "aigc_image_model_loads_total", **model),
        "generation": value(after, "aigc_image_generation_seconds_count", **model)
        - value(before, "aigc_image_generation_seconds_count", **model),
        "batch size": value(after, "aigc_image_batch_size_sum") - value(before, "aigc_image_batch_size_sum"),
    }
    assert moved == {
        "requests": 1, "finished": 1, "images": 2, "queue wait": 1, "model loads": 1, "generation": 1, "batch size": 1
    }  # fmt: skip
    assert value(after, "aigc_image_requests_total", action="DescribeAigcImageTask", code="OK") >= 1
    assert ("aigc_image_tasks_waiting", ()) in after and ("aigc_image_tasks_running", ()) in after
    assert value(after, "aigc_image_workers", state="idle") + value(after, "aigc_image_workers", state="busy") == 1


def test_a_refused_request_is_counted_with_its_code_and_no_unbounded_labels(tmp_path: Path) -> None:
    with live_server(tmp_path / "data") as server:
        httpx.post(f"{server.url}/", headers={"X-TC-Action": "NoSuchThing" * 20}, content=b"{}")
        samples = scrape(server.url)
    assert value(samples, "aigc_image_requests_total", action="unknown", code="AuthFailure.InvalidAuthorization") == 1
    assert not any("NoSuchThing" in str(labels) for _, labels in samples)


def test_metrics_are_refused_outside_the_listed_networks(tmp_path: Path) -> None:
    with live_server(tmp_path / "data", env={"AIGC_IMAGE_API_METRICS_NETWORKS": "10.0.0.0/8"}) as server:
        assert httpx.get(f"{server.url}/metrics").status_code == 403
    with live_server(tmp_path / "off", env={"AIGC_IMAGE_API_METRICS_NETWORKS": ""}) as server:
        assert httpx.get(f"{server.url}/metrics").status_code == 403


def test_a_standalone_worker_serves_its_own_metrics(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with live_server(tmp_path / "data", "--no-worker") as server:
        command = [sys.executable, "-m", "aigc_image", "worker", "--metrics-port", str(port)]
        command += ["--data-dir", str(server.data_dir), "--config", str(server.data_dir / "config.toml")]
        with (tmp_path / "worker.log").open("ab") as log:
            worker = subprocess.Popen(command, env=server_env(), cwd=ROOT, stdout=log, stderr=log)
        try:
            client = sdk_client(server)
            task_id = client.CreateAigcImageTask(create_request(Prompt="a lighthouse")).TaskId
            assert wait_until_finished(client, task_id)[-1].Status == "DONE"
            own = scrape(f"http://127.0.0.1:{port}")
        finally:
            worker.terminate()
            assert worker.wait(60) == 0
    assert value(own, "aigc_image_tasks_finished_total", model="tiny-random:1", status="DONE") == 1
