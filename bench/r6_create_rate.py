"""R6: signed, durable CreateAigcImageTask requests per second on one server process.

The server (``serve --no-worker``, SQLite WAL) is pinned to one core; the load generator (asyncio,
raw keep-alive sockets, pre-signed requests) to the other. The baseline is ``bench/bare_app.py``:
the same framework, server settings and signature check, without validation or the database,
measured the same way in the same run. Every reply is checked to be a success envelope, and the
task count in the database is compared with the successes afterwards.
Targets (perf-anchors 4.1): ≥ 2,500 creates/s per core and ≥ 0.5 of the bare endpoint.

    .venv/bin/python -m bench.r6_create_rate [--seconds 10] [--connections 32]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aigc_image.protocol.signing import sign_tc3_headers
from bench.common import ROOT, SECRET_ID, SECRET_KEY, pin


def prebuilt_requests(host: str, count: int) -> list[tuple[bytes, bytes]]:
    """Signed requests (head without its blank line, body), valid for the 300 s timestamp window.

    They are cycled through, so each send adds a unique X-TC-TraceId, as every SDK call does;
    otherwise a repeat would be a replay, answered from the original task without an insert.
    """
    requests = []
    for index in range(count):
        body = json.dumps(
            {"Prompt": "a lighthouse at dusk", "ModelName": "tiny-random", "Operator": f"bench-{index}"}
        ).encode()
        headers = sign_tc3_headers(
            secret_id=SECRET_ID, secret_key=SECRET_KEY, action="CreateAigcImageTask", body=body, host=host,
            timestamp=int(time.time()),
        )  # fmt: skip
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        requests.append((f"POST / HTTP/1.1\r\n{head}Content-Length: {len(body)}\r\n".encode(), body))
    return requests


TRACE_IDS = itertools.count()  # one event loop drives every connection, so this is race-free


async def connection(
    host: str, port: int, requests: list[tuple[bytes, bytes]], offset: int, deadline: float, counts: dict[str, int]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    index = offset
    while time.perf_counter() < deadline:
        head, body = requests[index % len(requests)]
        writer.write(b"%sX-TC-TraceId: %d\r\n\r\n%s" % (head, next(TRACE_IDS), body))
        index += 1
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
        body = await reader.readexactly(length)
        counts["ok" if b'"TaskId"' in body else "error"] += 1
    writer.close()


async def load(urls: list[str], seconds: float, connections: int) -> tuple[float, dict[str, int]]:
    """Drive ``connections`` keep-alive connections, spread evenly over ``urls``, for ``seconds``."""
    targets = []
    for url in urls:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        targets.append((host, int(port), prebuilt_requests(f"{host}:{port}", 4000 // len(urls))))

    async def run(deadline: float, salt: int) -> None:
        await asyncio.gather(
            *(
                connection(
                    *targets[i % len(targets)][:2], targets[i % len(targets)][2], i * 131 + salt, deadline, counts
                )
                for i in range(connections)
            )
        )

    counts = {"ok": 0, "error": 0}
    await run(time.perf_counter() + 1.0, 0)  # warm-up
    counts = {"ok": 0, "error": 0}
    started = time.perf_counter()
    await run(started + seconds, 7)
    return time.perf_counter() - started, counts


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(
    target: str, data_dir: Path, cores: str, extra_env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """Start one server pinned to ``cores`` (a taskset list); both kinds get the same environment
    and output handling."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIGC_IMAGE_")}
    env.update({"AIGC_IMAGE_SECRET_ID": SECRET_ID, "AIGC_IMAGE_SECRET_KEY": SECRET_KEY, **(extra_env or {})})
    # The rate limit and the per-key cap are off: this measures throughput, not the limits.
    env.update({"AIGC_IMAGE_API_RATE_LIMIT": "0", "AIGC_IMAGE_API_MAX_ACTIVE_TASKS_PER_KEY": "0"})
    if target == "bare":
        args = ["-m", "uvicorn", "bench.bare_app:app", "--log-level", "warning", "--no-access-log", "--port", str(port)]
    else:
        args = ["-m", "aigc_image", "serve", "--no-worker", "--data-dir", str(data_dir), "--port", str(port)]
    command = ["taskset", "-c", cores, sys.executable, *args]
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return process, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{target} server did not start")


def measure(target: str, data_dir: Path, core: int, seconds: float, connections: int) -> tuple[float, int]:
    process, url = start(target, data_dir, str(core))
    try:
        elapsed, counts = asyncio.run(load([url], seconds, connections))
    finally:
        process.terminate()
        process.wait()
    if counts["error"]:
        raise RuntimeError(f"{target}: {counts['error']} error replies")
    return counts["ok"] / elapsed, counts["ok"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    server_core = cores[0]
    pin(1)  # the load generator on the other core

    bare: list[float] = []
    service: list[float] = []
    answered = 0
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        for _ in range(args.rounds):  # alternate, so drift of the machine hits both alike
            bare.append(measure("bare", data, server_core, args.seconds, args.connections)[0])
            rate, ok = measure("service", data, server_core, args.seconds, args.connections)
            service.append(rate)
            answered += ok
        with sqlite3.connect(data / "aigc-image.db") as db:
            stored = db.execute("SELECT count(*) FROM tasks").fetchone()[0]

    bare_rate, service_rate = statistics.median(bare), statistics.median(service)

    def rounds(rates: list[float]) -> str:
        return ", ".join(f"{rate:.0f}" for rate in rates)

    print(f"R6 create rate: server on 1 core, {args.connections} connections, {args.rounds} x {args.seconds:.0f} s")
    print(f"  bare signature-check endpoint: median {bare_rate:6.0f} req/s   rounds: {rounds(bare)}")
    print(f"  CreateAigcImageTask (durable): median {service_rate:6.0f} req/s   rounds: {rounds(service)}")
    print(f"  every reply was a TaskId: {answered} measured (plus warm-ups); tasks committed to SQLite: {stored}")
    print(f"  R6 = {service_rate:.0f} creates/s per core; ratio to bare = {service_rate / bare_rate:.2f}")


if __name__ == "__main__":
    main()
