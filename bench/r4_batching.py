"""R4: throughput with dynamic batching. 16 concurrent same-shape tasks through the service, batched
and not, against a sequential loop of the same 16 raw ``pipe()`` calls.

Everything runs the offline ``tiny-random`` pipeline at 64×64, 20 steps, with one torch thread (the
API process and the load generator get the other core). The raw baseline runs in this process: 16
calls, each with its own prompt and seed. The service side is a real ``aigc-image serve`` (API +
worker process) with ``worker.max_batch`` 8 (the default) or 1: 16 client threads each create a
task at the same moment and poll DescribeAigcImageTask until DONE; the time is from the first
create to the last DONE. Rounds alternate raw and service runs; medians are reported.
Also: one task alone through the batching service, over the same call made raw (as R1).
Targets (perf-anchors 4.1): batched service over unbatched service ≥ 1.8, over the raw loop ≥ 1.8.

    .venv/bin/python -m bench.r4_batching [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import torch

from aigc_image.engines.tiny_random import build_pipeline
from bench.common import server
from bench.r1_overhead import KeepAliveClient, service_once

TASKS = 16
STEPS = 20
REGISTRY = f"""
[[models]]
name = "bench"
version = "{STEPS}"
engine = "tiny-random"
steps = {STEPS}
guidance_scale = 6.0
width = 64
height = 64
"""


def raw_loop(pipe: object) -> float:
    started = time.perf_counter()
    for index in range(TASKS):
        generator = torch.Generator("cpu").manual_seed(index)
        with torch.inference_mode():
            pipe(f"a lighthouse {index}", num_inference_steps=STEPS, guidance_scale=6.0, width=64, height=64,  # type: ignore[operator]
                 generator=generator)  # fmt: skip
    return time.perf_counter() - started


def concurrent_tasks(url: str, quiet: float) -> float:
    """16 clients create at once and poll until DONE; seconds from the first create to the last DONE."""
    barrier = threading.Barrier(TASKS + 1)
    finished: list[float] = []

    def client(index: int) -> None:
        connection = KeepAliveClient(url)
        barrier.wait()
        task_id = connection.call(
            "CreateAigcImageTask",
            {"Prompt": f"a lighthouse {index}", "ModelName": "bench", "AdditionalParameters": f'{{"seed": {index}}}'},
        )["TaskId"]
        time.sleep(quiet)
        while (status := connection.call("DescribeAigcImageTask", {"TaskId": task_id})["Status"]) not in (
            "DONE",
            "FAIL",
        ):
            time.sleep(0.01)
        if status != "DONE":
            raise RuntimeError(f"task {task_id} failed")
        finished.append(time.perf_counter())

    threads = [threading.Thread(target=client, args=(i,)) for i in range(TASKS)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return max(finished) - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    pipe = build_pipeline()
    pipe.set_progress_bar_config(disable=True)
    raw_loop(pipe)  # warm-up

    raw: list[float] = []
    service: dict[int, list[float]] = {8: [], 1: []}
    single: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        registry = Path(tmp) / "models.toml"
        registry.write_text(REGISTRY)
        for round_ in range(args.rounds):
            for max_batch in (8, 1):
                env = {
                    "AIGC_IMAGE_MODELS_REGISTRY_FILE": str(registry),
                    "AIGC_IMAGE_WORKER_TORCH_THREADS": "1",
                    "AIGC_IMAGE_WORKER_PRELOAD": f"bench:{STEPS}",
                    "AIGC_IMAGE_WORKER_MAX_BATCH": str(max_batch),
                }
                with server(Path(tmp) / f"data-{round_}-{max_batch}", env=env) as url:
                    client = KeepAliveClient(url)
                    service_once(client, STEPS, quiet=0)  # warm-up: the model is loaded, the first call made
                    raw.append(raw_loop(pipe))
                    service[max_batch].append(concurrent_tasks(url, quiet=0.5 * raw[-1] / TASKS))
                    if max_batch == 8:
                        started = time.perf_counter()
                        with torch.inference_mode():
                            pipe("a lighthouse", num_inference_steps=STEPS, guidance_scale=6.0, width=64, height=64)
                        alone = time.perf_counter() - started
                        fresh = KeepAliveClient(url)  # the first one idled past the server's keep-alive
                        single.append((service_once(fresh, STEPS, quiet=0.8 * alone), alone))

    def rate(seconds: list[float]) -> float:
        return TASKS / statistics.median(seconds)

    print(f"R4 batching: {TASKS} concurrent tasks, tiny-random 64x64, {STEPS} steps, 1 torch thread, "
          f"{args.rounds} rounds (medians)")  # fmt: skip
    print(f"  raw pipe() loop, sequential:      {rate(raw):6.2f} img/s")
    print(f"  service, unbatched (max_batch 1): {rate(service[1]):6.2f} img/s")
    print(f"  service, batched (max_batch 8):   {rate(service[8]):6.2f} img/s")
    print(f"  batched / unbatched service: {rate(service[8]) / rate(service[1]):.2f}   (target >= 1.8)")
    print(f"  batched service / raw loop:  {rate(service[8]) / rate(raw):.2f}   (target >= 1.8)")
    latency = statistics.median(s for s, _ in single) / statistics.median(r for _, r in single)
    print(f"  one task alone with batching on: {statistics.median(s for s, _ in single) * 1000:.0f} ms, "
          f"{latency:.3f} of the raw call")  # fmt: skip


if __name__ == "__main__":
    main()
