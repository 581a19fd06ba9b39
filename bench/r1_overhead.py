"""R1: service overhead. Create → DONE through the HTTP API, over the same pipeline call made directly.

Both sides run the offline ``tiny-random`` pipeline at 64×64 with one torch thread. The raw
baseline runs in this process, interleaved run by run with the service measurement, so machine
drift affects both. The service side is timed by a client that, over one keep-alive connection
as the official SDK uses, POSTs CreateAigcImageTask and then polls DescribeAigcImageTask every
millisecond until it reads DONE. It sleeps through the first 80% of the raw time before polling,
so that its polling does not take a core from the pipeline on a 2-core machine. The service time
includes the HTTP round trips, the durable insert, waking the idle worker, the claim, the pipeline,
PNG encoding, the fsynced write and the completion.
Targets (perf-anchors 4.1): ratio ≤ 1.03 at 20 steps, ≤ 1.10 at 2 steps.

    .venv/bin/python -m bench.r1_overhead [--runs 30]
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from aigc_image.engines.tiny_random import build_pipeline
from bench.common import server, signed_request, summary

REGISTRY = """
[[models]]
name = "bench"
version = "{steps}"
engine = "tiny-random"
steps = {steps}
guidance_scale = 6.0
width = 64
height = 64
"""


class KeepAliveClient:
    """Signed calls over one persistent connection, as the official SDK's requests session does."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=30)

    def call(self, action: str, params: dict[str, object]) -> dict[str, object]:
        request = signed_request(self.url, action, params)
        self.connection.request("POST", "/", body=request.data, headers=dict(request.header_items()))
        response: dict[str, object] = json.loads(self.connection.getresponse().read())["Response"]
        if "Error" in response:
            raise RuntimeError(response["Error"])
        return response


def service_once(client: KeepAliveClient, steps: int, quiet: float) -> float:
    """Create, then poll every millisecond; the first ``quiet`` seconds are slept through so the
    poller does not take CPU from the pipeline on a 2-core machine (real clients poll far less)."""
    started = time.perf_counter()
    task_id = client.call(
        "CreateAigcImageTask", {"Prompt": "a lighthouse", "ModelName": "bench", "ModelVersion": str(steps)}
    )["TaskId"]
    time.sleep(quiet)
    while True:
        status = client.call("DescribeAigcImageTask", {"TaskId": task_id})["Status"]
        if status == "DONE":
            return time.perf_counter() - started
        if status == "FAIL":
            raise RuntimeError(f"task {task_id} failed")
        time.sleep(0.001)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--steps", type=int, nargs="+", default=[20, 2])
    args = parser.parse_args()

    torch.set_num_threads(1)
    # Nothing is pinned: the OS spreads client, API and worker over the cores as it would in use.
    # (Starting a process under `taskset` made this torch build ~1.5x slower here, so no taskset.)
    pipe = build_pipeline()
    pipe.set_progress_bar_config(disable=True)

    with tempfile.TemporaryDirectory() as tmp:
        registry = Path(tmp) / "models.toml"
        registry.write_text("".join(REGISTRY.format(steps=s) for s in args.steps))
        env = {
            "AIGC_IMAGE_MODELS_REGISTRY_FILE": str(registry),
            "AIGC_IMAGE_WORKER_TORCH_THREADS": "1",
            "AIGC_IMAGE_WORKER_PRELOAD": ",".join(f"bench:{s}" for s in args.steps),
        }
        with server(Path(tmp) / "data", env=env) as url:
            client = KeepAliveClient(url)
            print(f"R1 service overhead, tiny-random 64x64, 1 torch thread, {args.runs} runs after 3 warm-ups")
            for steps in args.steps:
                raw: list[float] = []
                service: list[float] = []
                for run in range(args.runs + 3):
                    started = time.perf_counter()
                    with torch.inference_mode():  # as the worker calls it
                        pipe("a lighthouse", num_inference_steps=steps, guidance_scale=6.0, width=64, height=64)
                    raw_time = time.perf_counter() - started
                    service_time = service_once(client, steps, quiet=0.8 * raw_time)
                    if run >= 3:
                        raw.append(raw_time)
                        service.append(service_time)
                ratio = statistics.median(service) / statistics.median(raw)
                extra = (statistics.median(service) - statistics.median(raw)) * 1000
                print(f"  {steps:2d} steps  raw pipe(): {summary(raw)}")
                print(f"            service:    {summary(service)}")
                print(f"            R1 = {ratio:.3f}  (service adds {extra:.1f} ms at the median)")


if __name__ == "__main__":
    main()
