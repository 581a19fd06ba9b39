"""Deployment figures: the container image's size, its cold start to ``/readyz`` against the same
``serve`` started on the host, and tasks/s through the two-host setup of tests/fleet.py
(PostgreSQL, two API processes behind a balancer, two workers, each in a network namespace of
its own) against the same processes on loopback.

    bash deploy/build-image                 # the image, if the image figures are wanted
    .venv/bin/python -m bench.deploy [--tasks 48] [--rounds 2]

Needs root (namespaces); the image figures need podman and the image built. Rounds alternate
loopback and namespaced fleets, each started fresh; each round creates ``--tasks`` tiny-random
tasks through both API processes at once and times them to the last DONE.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.fleet import APIS, Fleet, Loopback, fleet, network
from tests.helpers import ROOT, SECRET_ID, SECRET_KEY, create_request, describe, live_server, sdk_client_at
from tests.netns import why_unavailable

IMAGE = "localhost/aigc-image:cpu"


def _until_ready(url: str, timeout: float = 300) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} not ready in {timeout} s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def container_cold_start(port: int) -> float:
    """``podman run`` of the image (serve, tiny-random) to its first 200 from /readyz, in seconds."""
    name = f"aigc-bench-{port}"
    start = time.monotonic()
    env = {
        "AIGC_IMAGE_MODELS_DEFAULT_MODEL": "tiny-random",
        "AIGC_IMAGE_WORKER_TORCH_THREADS": "1",
        "AIGC_IMAGE_SECRET_ID": SECRET_ID,
        "AIGC_IMAGE_SECRET_KEY": SECRET_KEY,
    }
    options = ["-d", "--rm", "--name", name, "-p", f"127.0.0.1:{port}:8000"]
    options += [f"--env={k}={v}" for k, v in env.items()]
    subprocess.run(["podman", "run", *options, IMAGE], check=True, capture_output=True)
    try:
        _until_ready(f"http://127.0.0.1:{port}")
        return time.monotonic() - start
    finally:
        subprocess.run(["podman", "rm", "-f", "-v", "-t", "5", name], capture_output=True)


def host_cold_start(tmp: Path) -> float:
    """The same ``serve`` as a host process: start to its first 200 from /readyz, in seconds."""
    start = time.monotonic()
    with live_server(tmp) as server:
        _until_ready(server.url)
        return time.monotonic() - start


def throughput(running: Fleet, tasks: int) -> float:
    """Tasks/s: ``tasks`` created through both API processes at once, to the last DONE."""
    clients = [sdk_client_at(running.api_urls[host].removeprefix("http://")) for host in APIS]

    def one(n: int) -> None:
        client = clients[n % 2]
        task_id = client.CreateAigcImageTask(create_request(Prompt=f"bench {n}")).TaskId
        while (status := describe(client, task_id).Status) not in ("DONE", "FAIL"):
            time.sleep(0.05)
        if status != "DONE":
            raise RuntimeError(f"task {task_id} ended {status}")

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(one, range(tasks)))
    return tasks / (time.monotonic() - start)


def fleet_round(namespaced: bool, tasks: int) -> float:
    with tempfile.TemporaryDirectory(prefix="aigc-bench-") as tmp:
        hosts = network() if namespaced else Loopback()
        try:
            with fleet(hosts, Path(tmp)) as running, hosts.entered("client"):
                throughput(running, 8)  # warm-up: models loaded, connections open
                return throughput(running, tasks)
        finally:
            if not isinstance(hosts, Loopback):
                hosts.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--starts", type=int, default=3, help="cold starts of each kind")
    args = parser.parse_args()

    if shutil.which("podman") and subprocess.run(["podman", "image", "exists", IMAGE]).returncode == 0:
        size = int(subprocess.run(["podman", "image", "inspect", "--format", "{{.Size}}", IMAGE],
                                  capture_output=True, text=True, check=True).stdout)  # fmt: skip
        print(f"image {IMAGE}: {size / 1e9:.2f} GB")
        containers, hosts = [], []
        for _ in range(args.starts):  # alternating, so the machine's load falls on both alike
            containers.append(container_cold_start(free_port()))
            with tempfile.TemporaryDirectory(prefix="aigc-bench-") as tmp:
                hosts.append(host_cold_start(Path(tmp)))
        c, h = statistics.median(containers), statistics.median(hosts)
        print(f"cold start to /readyz: container {c:.1f} s, host process {h:.1f} s (median of {args.starts}); "
              f"container / host = {c / h:.2f}")  # fmt: skip
    else:
        print(f"no image {IMAGE}: run `bash deploy/build-image` for the image figures", file=sys.stderr)

    why = why_unavailable()
    if why:
        print(f"no fleet figures: {why}", file=sys.stderr)
        return
    loopback, namespaced = [], []
    for _ in range(args.rounds):
        loopback.append(fleet_round(False, args.tasks))
        namespaced.append(fleet_round(True, args.tasks))
    lo, ns = statistics.median(loopback), statistics.median(namespaced)
    print(f"tasks/s, {args.tasks} tiny-random tasks, 2 API processes + 2 workers + PostgreSQL: loopback {lo:.2f}, "
          f"namespaced hosts {ns:.2f} (medians of {args.rounds}); namespaced / loopback = {ns / lo:.2f}")  # fmt: skip
    print(f"  rounds: loopback {[round(x, 2) for x in loopback]}, namespaced {[round(x, 2) for x in namespaced]}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
