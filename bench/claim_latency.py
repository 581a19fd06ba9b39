"""Claim latency: a task created → RUN on an idle worker, on SQLite and on PostgreSQL.

A real ``aigc-image serve`` (API + worker child) per store. Tasks are created one at a time over
HTTP, each after the previous one is DONE and a pause, so the worker is always idle (waiting
for a wake-up) when the create commits. The latency of each task is read from its row:
``started_at`` (the worker's claim) minus ``created_at`` (the API's insert), both from the same
host clock. The baseline, measured in this process on the same database, is one claim
transaction on a queue that already holds a task: what a claim costs with no waiting at all.
The difference is the wake-up path (NOTIFY or the Unix datagram, plus the worker's loop).

    .venv/bin/python -m bench.claim_latency [--tasks 150] [--postgres-url postgresql://...]

Without ``--postgres-url`` a throwaway PostgreSQL cluster is started on loopback (Debian's
binaries, as the tests do).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from aigc_image.clock import SystemClock
from aigc_image.store import open_store
from aigc_image.tasks import NewTask, TaskSpec, new_task_id
from bench.common import server, signed_request


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def run_tasks(url: str, count: int, pause: float) -> list[str]:
    """Create ``count`` tasks one after another, each once the worker is idle again."""
    ids = []
    for index in range(count + 3):  # three warm-ups: model load, first connections
        params = {"Prompt": f"lighthouse {index}", "ModelName": "tiny-random"}
        with urllib.request.urlopen(signed_request(url, "CreateAigcImageTask", params)) as reply:
            task_id = json.load(reply)["Response"]["TaskId"]
        while True:
            with urllib.request.urlopen(signed_request(url, "DescribeAigcImageTask", {"TaskId": task_id})) as reply:
                if json.load(reply)["Response"]["Status"] in ("DONE", "FAIL"):
                    break
            time.sleep(0.005)
        if index >= 3:
            ids.append(task_id)
        time.sleep(pause)  # the worker goes back to waiting for work
    return ids


def latencies(database_url: str, ids: list[str]) -> list[float]:
    query = "SELECT started_at - created_at FROM tasks WHERE task_id = "
    if database_url.startswith("sqlite:///"):
        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as db:
            return [db.execute(query + "?", (task_id,)).fetchone()[0] for task_id in ids]
    with psycopg.connect(database_url) as pg:
        return [pg.execute(query + "%s", (task_id,)).fetchone()[0] for task_id in ids]  # type: ignore[index]


def claim_cost(database_url: str, rounds: int = 200) -> list[float]:
    """Baseline: seconds for one claim transaction when a task is already waiting."""
    store = open_store(database_url, SystemClock())
    spec = TaskSpec("tiny-random", "1", "p", "", 1, "png", 64, 64, 2, None)
    samples = []
    for _ in range(rounds):
        asyncio.run(store.create(NewTask(new_task_id(), "bench", spec)))
        started = time.perf_counter()
        [claim] = store.claim("bench", 1, lease_seconds=60)
        samples.append(time.perf_counter() - started)
        store.complete(claim.task.task_id, claim.token, [])
    store.close()
    return samples


@contextmanager
def throwaway_postgres() -> Iterator[str]:
    from tests.postgres_server import PostgresServer

    cluster = PostgresServer()
    try:
        yield cluster.new_database()
    finally:
        cluster.remove()


def measure(name: str, database_url: str, data_dir: Path, tasks: int, pause: float) -> None:
    env = {
        "AIGC_IMAGE_DATABASE_URL": database_url,
        "AIGC_IMAGE_MODELS_DEFAULT_MODEL": "tiny-random",
        "AIGC_IMAGE_WORKER_TORCH_THREADS": "1",
    }
    with server(data_dir, env=env) as url:
        ids = run_tasks(url, tasks, pause)
    waits = latencies(database_url, ids)
    claims = claim_cost(database_url)

    def ms(value: float) -> str:
        return f"{value * 1000:6.2f} ms"

    p50, p99 = statistics.median(waits), percentile(waits, 0.99)
    base = statistics.median(claims)
    print(f"  {name:10}  created → RUN  p50 {ms(p50)}  p99 {ms(p99)}  max {ms(max(waits))}  (n={len(waits)})")
    print(f"  {'':10}  one claim (baseline) p50 {ms(base)}  p99 {ms(percentile(claims, 0.99))};"
          f"  p50 latency / claim = {p50 / base:.1f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=150)
    parser.add_argument("--pause", type=float, default=0.05, help="seconds idle before each create")
    parser.add_argument("--postgres-url", default="", help="an empty database to use (default: a throwaway cluster)")
    args = parser.parse_args()
    print(f"Claim latency on an idle worker: {args.tasks} tasks, one at a time, tiny-random 64 px")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        measure("SQLite", f"sqlite:///{root / 'sqlite' / 'aigc-image.db'}", root / "sqlite", args.tasks, args.pause)
        if args.postgres_url:
            measure("PostgreSQL", args.postgres_url, root / "pg", args.tasks, args.pause)
        else:
            with throwaway_postgres() as url:
                measure("PostgreSQL", url, root / "pg", args.tasks, args.pause)


if __name__ == "__main__":
    main()
