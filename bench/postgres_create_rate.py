"""Durable creates/s on PostgreSQL with one and with two API processes.

The deployment of docs/operations.md "Several hosts": ``serve --no-worker`` processes sharing
one PostgreSQL. The load generator is R6's (pre-signed requests on keep-alive connections,
each reply checked to be a TaskId), its connections spread evenly over the API processes. The
baseline, measured in the same run and under the same conditions, is the bare signature-check
endpoint of ``bench/bare_app.py`` in one process. Nothing is pinned: the API processes,
PostgreSQL and the load generator share the machine's cores, as they would on one host, so on
a small machine the figures show contention as much as scaling (see bench/README.md).

    .venv/bin/python -m bench.postgres_create_rate [--seconds 5] [--rounds 3] [--postgres-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

import psycopg

from bench.claim_latency import throwaway_postgres
from bench.r6_create_rate import load, start


def rate(target: str, processes: int, data_dir: Path, env: dict[str, str], seconds: float, connections: int) -> float:
    cores = ",".join(str(core) for core in sorted(os.sched_getaffinity(0)))
    servers: list[tuple[subprocess.Popen[bytes], str]] = []
    try:
        for _ in range(processes):
            servers.append(start(target, data_dir, cores, env))
        elapsed, counts = asyncio.run(load([url for _, url in servers], seconds, connections))
    finally:
        for process, _ in servers:
            process.terminate()
            process.wait()
    if counts["error"]:
        raise RuntimeError(f"{target}: {counts['error']} error replies")
    return counts["ok"] / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--postgres-url", default="", help="an empty database to use (default: a throwaway cluster)")
    args = parser.parse_args()

    def run(url: str) -> None:
        env = {"AIGC_IMAGE_DATABASE_URL": url}
        results: dict[str, list[float]] = {"bare": [], "1 API": [], "2 API": []}
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "data"
            for _ in range(args.rounds):  # interleaved, so drift of the machine hits all alike
                results["bare"].append(rate("bare", 1, data, env, args.seconds, args.connections))
                results["1 API"].append(rate("service", 1, data, env, args.seconds, args.connections))
                results["2 API"].append(rate("service", 2, data, env, args.seconds, args.connections))
        with psycopg.connect(url) as db:
            stored = db.execute("SELECT count(*) FROM tasks").fetchone()[0]  # type: ignore[index]
        medians = {name: statistics.median(rates) for name, rates in results.items()}
        print(f"Creates/s on PostgreSQL, {args.connections} connections, {args.rounds} x {args.seconds:.0f} s, "
              f"{len(os.sched_getaffinity(0))} cores shared by everything")  # fmt: skip
        for name, rates in results.items():
            label = "bare endpoint, 1 process" if name == "bare" else f"CreateAigcImageTask, {name} process(es)"
            rounds = ", ".join(f"{r:.0f}" for r in rates)
            print(f"  {label:42} median {medians[name]:6.0f} /s   rounds: {rounds}")
        print(f"  tasks committed to PostgreSQL: {stored}")
        print(f"  1 API / bare = {medians['1 API'] / medians['bare']:.2f};  2 API / 1 API = "
              f"{medians['2 API'] / medians['1 API']:.2f}")  # fmt: skip

    if args.postgres_url:
        run(args.postgres_url)
    else:
        with throwaway_postgres() as url:
            run(url)


if __name__ == "__main__":
    main()
