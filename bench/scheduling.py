"""Scheduling for many tenants and many models: the fair order against the first-come one, run the same way.

Each case runs a real ``aigc-image serve`` (API + one CPU worker, one torch thread, tiny-random
models at 64×64) once with ``worker.scheduling = "fair"`` and once with ``"fifo"`` (the order before
fair scheduling), in the same process, and reads every task's times from the store afterwards
(``created_at``, ``started_at`` = its claim, ``finished_at``), so the client's polling costs nothing.

1. **Burst.** Key A creates 60 tasks, then key B creates one (``max_batch`` 8, then 1). Printed:
   how much of A's burst was done when B's task was, and how many of A's batches finished between
   B's create and B's task being done (batches already claimed when B arrived count: the worker
   generates the next batch while up to four are being stored). Target: at most two of A's batches.
2. **Swaps.** Key A creates 40 tasks alternating two models, ``max_batch`` 1,
   ``max_loaded_models`` 1 (the first model preloaded). Printed: model loads during the run (each
   one a swap), the wall time, and the longest queue wait per model (affinity bounds the other
   model's by ``worker.affinity_wait``, 10 s). Target: at most 4 swaps.
3. **Throughput.** One key, one model, 96 tasks created at once, ``max_batch`` 8; each round runs
   both policies, which one first alternating. Target: fair at least 0.97 of fifo. On a shared
   machine the pipeline's own time varies by half from one server to the next (other processes
   take the cores), far more than any scheduling cost, so the wall time of each run is split, with
   the worker's own ``aigc_image_generation_seconds``, into the pipeline calls and everything else
   (claims, leases, encoding, storing, completing): the policies differ only in the second part.
   Printed: the medians of both parts, and fair / fifo for the same pipeline time:
   (P + fifo's other part) / (P + fair's other part), P the median pipeline time of all runs.
   The wall times are printed too. The cost is also measured where it is
   paid, in this process: one claim transaction of 8 tasks from a queue of 60 (two keys) under
   each policy, on SQLite and on a throwaway PostgreSQL.

    .venv/bin/python -m bench.scheduling [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import re
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from aigc_image.clock import SystemClock
from aigc_image.config import SchedulingPolicy
from aigc_image.protocol.signing import sign_tc3_headers
from aigc_image.store import Scheduling, open_store
from aigc_image.tasks import NewTask, TaskSpec, new_task_id
from bench.common import SECRET_ID, SECRET_KEY, server

STEPS = 10
REGISTRY = "".join(
    f"""
[[models]]
name = "{name}"
version = "1"
engine = "tiny-random"
steps = {STEPS}
guidance_scale = 6.0
width = 64
height = 64
"""
    for name in ("bench", "alpha", "beta")
)
OTHER_ID = "AKIDbenchmarkother00000000000000"
OTHER_KEY = "benchmark-other-key-000000000000"
KEYS = {"A": (SECRET_ID, SECRET_KEY), "B": (OTHER_ID, OTHER_KEY)}
POLICIES = ("fair", "fifo")


class Client:
    """Signed calls for one key over one keep-alive connection, as the official SDK makes them."""

    def __init__(self, url: str, key: tuple[str, str]) -> None:
        self.host = url.removeprefix("http://")
        self.key = key
        self.connection = http.client.HTTPConnection(self.host, timeout=60)

    def create(self, prompt: str, model: str = "bench", **fields: object) -> str:
        """A CreateAigcImageTask of ``model`` (``fields``: other parameters); its TaskId."""
        body = json.dumps({"Prompt": prompt, "ModelName": model, "ModelVersion": "1", **fields}).encode()
        headers = sign_tc3_headers(
            secret_id=self.key[0], secret_key=self.key[1], action="CreateAigcImageTask", body=body, host=self.host,
            timestamp=int(time.time()),
        )  # fmt: skip
        self.connection.request("POST", "/", body=body, headers=headers)
        response = json.loads(self.connection.getresponse().read())["Response"]
        if "Error" in response:
            raise RuntimeError(response["Error"])
        return str(response["TaskId"])


@dataclass(frozen=True)
class Row:
    secret_id: str
    model: str
    created: float
    started: float
    finished: float


@dataclass
class Service:
    url: str
    data_dir: Path

    def client(self, key: str) -> Client:
        return Client(self.url, KEYS[key])

    def wait_until_idle(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with sqlite3.connect(self.data_dir / "aigc-image.db") as db:
                left, failed = db.execute(
                    "SELECT sum(status IN ('WAIT', 'RUN')), sum(status = 'FAIL') FROM tasks"
                ).fetchone()
            if failed:
                raise RuntimeError(f"{failed} task(s) failed; see {self.data_dir / 'server.log'}")
            if not left:
                return
            time.sleep(0.05)
        raise RuntimeError("the queue did not drain")

    def rows(self, ids: list[str]) -> dict[str, Row]:
        with sqlite3.connect(self.data_dir / "aigc-image.db") as db:
            found = {
                task_id: Row(secret_id, json.loads(spec)["model_name"], created, started, finished)
                for task_id, secret_id, spec, created, started, finished in db.execute(
                    "SELECT task_id, secret_id, spec, created_at, started_at, finished_at FROM tasks"
                )
            }
        return {task_id: found[task_id] for task_id in ids}

    def loads(self) -> list[str]:
        return re.findall(r"loading (\w+):1 from", (self.data_dir / "server.log").read_text(errors="replace"))


@contextmanager
def service(root: Path, name: str, policy: str, max_batch: int, max_loaded: int, model: str) -> Iterator[Service]:
    """A server whose worker has ``model`` loaded and has run one task."""
    (root / "registry.toml").write_text(REGISTRY)
    (root / "keys.toml").write_text(f'[[keys]]\nsecret_id = "{OTHER_ID}"\nsecret_key = "{OTHER_KEY}"\n')
    env = {
        "AIGC_IMAGE_MODELS_REGISTRY_FILE": str(root / "registry.toml"),
        "AIGC_IMAGE_WORKER_TORCH_THREADS": "1",
        "AIGC_IMAGE_WORKER_SCHEDULING": policy,
        "AIGC_IMAGE_WORKER_MAX_BATCH": str(max_batch),
        "AIGC_IMAGE_WORKER_MAX_LOADED_MODELS": str(max_loaded),
        "AIGC_IMAGE_WORKER_PRELOAD": f"{model}:1",
    }
    data_dir = root / name
    with server(data_dir, "--config", str(root / "keys.toml"), env=env) as url:
        live = Service(url, data_dir)
        live.client("A").create("warm-up", model)  # the first pipeline call, connections, caches
        live.wait_until_idle()
        yield live


# -- the three cases -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Burst:
    share: float  # of A's burst done when B's task was
    batches: int  # of A's, finished while B's task waited or ran
    batch_seconds: float  # the mean time of one of A's batches


def burst(live: Service, model: str) -> Burst:
    a, b = live.client("A"), live.client("B")
    burst_ids = [a.create(f"burst {index}", model) for index in range(60)]
    lonely = b.create("one", model)
    live.wait_until_idle()
    rows = live.rows([*burst_ids, lonely])
    mine = rows[lonely]
    done_before = sum(1 for task_id in burst_ids if rows[task_id].finished <= mine.finished)
    batches: dict[float, float] = {}  # A's batches (a claim's tasks share its time) → when the last one finished
    for task_id in burst_ids:
        batches[rows[task_id].started] = max(batches.get(rows[task_id].started, 0.0), rows[task_id].finished)
    during = sum(1 for finished in batches.values() if mine.created < finished <= mine.finished)
    span = max(row.finished for row in rows.values()) - min(row.started for row in rows.values())
    return Burst(done_before / 60, during, span / len(batches))


@dataclass(frozen=True)
class Swaps:
    loads: int
    seconds: float
    longest_wait: dict[str, float]


def swaps(live: Service) -> Swaps:
    client = live.client("A")
    loads_before = len(live.loads())
    ids = [client.create(f"swap {index}", model="alpha" if index % 2 == 0 else "beta") for index in range(40)]
    live.wait_until_idle()
    rows = live.rows(ids).values()
    longest = {model: max(r.started - r.created for r in rows if r.model == model) for model in ("alpha", "beta")}
    seconds = max(r.finished for r in rows) - min(r.created for r in rows)
    return Swaps(len(live.loads()) - loads_before, seconds, longest)


@dataclass(frozen=True)
class Run:
    seconds: float  # the first create to the last task done
    pipeline: float  # of which in pipeline calls (the worker's generation histogram)

    @property
    def other(self) -> float:
        return self.seconds - self.pipeline


def generation_seconds(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("aigc_image_generation_seconds_sum"))  # fmt: skip


def throughput(live: Service, tasks: int = 96) -> Run:
    client = live.client("A")
    before = generation_seconds(live.url)
    ids = [client.create(f"throughput {index}") for index in range(tasks)]
    live.wait_until_idle()
    rows = live.rows(ids).values()
    pipeline = generation_seconds(live.url) - before
    return Run(max(r.finished for r in rows) - min(r.created for r in rows), pipeline)


def claim_cost(database_url: str, policy: str, rounds: int = 60) -> float:
    """Median seconds of one claim of 8 from a queue of 60 waiting tasks of two keys (refilled)."""
    store = open_store(database_url, SystemClock(), scheduling=Scheduling(SchedulingPolicy(policy)))
    spec = TaskSpec("bench", "1", "p", "", 1, "png", 64, 64, STEPS, 6.0)

    def add(key: str, count: int) -> None:
        async def create() -> None:
            await asyncio.gather(*(store.create(NewTask(new_task_id(), key, spec)) for _ in range(count)))

        asyncio.run(create())

    add("A", 50)
    add("B", 10)
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        claims = store.claim("bench", 8, lease_seconds=60, loaded=["bench:1"])
        samples.append(time.perf_counter() - started)
        for claim in claims:
            store.complete(claim.task.task_id, claim.token, [])
        for key in ("A", "B"):
            add(key, sum(1 for claim in claims if claim.task.secret_id == key))
    store.close()
    return statistics.median(samples)


def claim_costs(root: Path) -> dict[tuple[str, str], float]:
    from tests.postgres_server import PostgresServer

    costs = {}
    cluster = PostgresServer()
    try:
        for policy in POLICIES:
            costs[("SQLite", policy)] = claim_cost(f"sqlite:///{root / f'claims-{policy}.db'}", policy)
            costs[("PostgreSQL", policy)] = claim_cost(cluster.new_database(), policy)
    finally:
        cluster.remove()
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="throughput rounds per policy")
    args = parser.parse_args()
    bursts: dict[tuple[str, int], Burst] = {}
    swapped: dict[str, Swaps] = {}
    runs: dict[str, list[Run]] = {policy: [] for policy in POLICIES}
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for round_ in range(args.rounds):
            for policy in POLICIES if round_ % 2 == 0 else POLICIES[::-1]:
                with service(root, f"{policy}-8-{round_}", policy, 8, 2, "bench") as live:
                    if round_ == 0:
                        bursts[(policy, 8)] = burst(live, "bench")
                    runs[policy].append(throughput(live))
        for policy in POLICIES:
            with service(root, f"{policy}-1", policy, 1, 1, "alpha") as live:
                bursts[(policy, 1)] = burst(live, "alpha")
                swapped[policy] = swaps(live)  # alpha still loaded: every load is a swap
        costs = claim_costs(root)

    print(f"Scheduling: one CPU worker, tiny-random 64x64, {STEPS} steps, 1 torch thread; fair against fifo")
    print("1. Burst: key A creates 60 tasks, then key B one. B's task done after ...")
    for max_batch in (8, 1):
        for policy in POLICIES:
            result = bursts[(policy, max_batch)]
            print(f"   max_batch {max_batch}, {policy}: {result.share:6.1%} of A's burst done; "
                  f"{result.batches:2d} of A's batches finished meanwhile ({result.batch_seconds * 1000:.0f} ms each)"
                  "  (target: at most 2)")  # fmt: skip
    print("2. Swaps: 40 tasks alternating two models, max_batch 1, max_loaded_models 1")
    for policy in POLICIES:
        swap = swapped[policy]
        waits = ", ".join(f"{model} {seconds:.1f} s" for model, seconds in swap.longest_wait.items())
        print(f"   {policy}: {swap.loads} model loads (swaps), {swap.seconds:.1f} s; longest wait: {waits}"
              "  (target: at most 4 swaps)")  # fmt: skip
    pipeline = {policy: statistics.median(run.pipeline for run in runs[policy]) for policy in POLICIES}
    other = {policy: statistics.median(run.other for run in runs[policy]) for policy in POLICIES}
    same = statistics.median(run.pipeline for policy in POLICIES for run in runs[policy])
    print(f"3. Throughput, one key, one model, 96 tasks, max_batch 8 ({args.rounds} rounds each, medians):")
    for policy in POLICIES:
        print(f"   {policy}: {pipeline[policy]:.2f} s in pipeline calls, {other[policy]:.3f} s besides; "
              f"runs {', '.join(f'{run.seconds:.2f}' for run in runs[policy])} s")  # fmt: skip
    print(f"   fair / fifo for the same pipeline time: {(same + other['fifo']) / (same + other['fair']):.3f}"
          "  (target: >= 0.97)")  # fmt: skip
    print(f"   load average {load[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end, {os.cpu_count()} cores")
    batch = same / 12  # seconds of one batch of 8 in the service (96 tasks: 12 batches)
    for store in ("SQLite", "PostgreSQL"):
        fair_ms, fifo_ms = costs[(store, "fair")] * 1000, costs[(store, "fifo")] * 1000
        extra = (fair_ms - fifo_ms) / 1000
        print(f"   one claim of 8 from 60 waiting, {store}: fair {fair_ms:.2f} ms, fifo {fifo_ms:.2f} ms; "
              f"the difference is {extra / batch:.2%} of a batch's pipeline time")  # fmt: skip


if __name__ == "__main__":
    main()
