"""Another key's task behind one key's slow reference-image server: this code against the code before
the fetch stage, run the same way in one process.

Each case runs a real ``aigc-image serve`` (API + one CPU worker, one torch thread, the built-in
tiny-random model, ``worker.max_batch`` 8, the shipped ``fetch.timeout`` of 30 s) and an image
server on loopback that sends a byte a second (tests/loopback.py's SlowServer, as the tests use):

* **alone**: key B's plain task, with nothing else queued (the median of 5, one after another);
* **behind**: key A creates 3 tasks whose reference image is on the slow server; once the worker
  is fetching, key B creates the same plain task (the median of 3 on this code, one after another
  while A's fetches go on; once on the baseline, where one takes minutes).

A task's latency is its ``finished_at`` − ``created_at`` in the store (the API's insert to the
worker's completion, one host clock), so the client's polling costs nothing. Printed: both
latencies and behind / alone, for this code and for the baseline: the same script starts the
baseline's ``aigc-image serve`` from a git worktree of ``--baseline`` (default: the last commit
that fetched references inside the generation loop), with the same interpreter and settings, under
``worker.scheduling`` fifo (the order the issue measured, about 290×) and fair (its default).
Target: this code ≤ 2×.

    .venv/bin/python -m bench.slow_references [--baseline REV] [--fetch-timeout 30]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.common import ROOT, server
from bench.scheduling import KEYS, OTHER_ID, OTHER_KEY, Client
from tests.loopback import SlowServer, png

BASELINE = "d9b89e9"  # main before the fetch stage: references fetched inside the generation loop


MODEL = "tiny-random"


@dataclass
class Service:
    url: str
    data_dir: Path

    def client(self, key: str) -> Client:
        return Client(self.url, KEYS[key])

    def latency(self, task_id: str, timeout: float = 1800) -> float:
        """Seconds from the task's insert to its completion, once it is DONE."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with sqlite3.connect(self.data_dir / "aigc-image.db") as db:
                status, created, finished, message = db.execute(
                    "SELECT status, created_at, finished_at, message FROM tasks WHERE task_id = ?", (task_id,)
                ).fetchone()
            if status == "DONE":
                return float(finished - created)
            if status == "FAIL":
                raise RuntimeError(f"task {task_id} failed: {message}")
            time.sleep(0.02)
        raise RuntimeError(f"task {task_id} was not done in {timeout} s")


@contextmanager
def service(root: Path, code: Path, name: str, policy: str, fetch_timeout: float) -> Iterator[Service]:
    """``aigc-image serve`` from the source tree ``code``."""
    (root / "keys.toml").write_text(f'[[keys]]\nsecret_id = "{OTHER_ID}"\nsecret_key = "{OTHER_KEY}"\n')
    env = {
        "AIGC_IMAGE_MODELS_DEFAULT_MODEL": "tiny-random",
        "AIGC_IMAGE_WORKER_TORCH_THREADS": "1",
        "AIGC_IMAGE_WORKER_SCHEDULING": policy,
        "AIGC_IMAGE_WORKER_PRELOAD": "tiny-random",
        "AIGC_IMAGE_FETCH_ALLOW_NETWORKS": "127.0.0.1/32",
        "AIGC_IMAGE_FETCH_TIMEOUT": f"{fetch_timeout:g}",
        "PYTHONPATH": str(code),  # this tree's aigc_image before the installed one (also in the worker child)
    }
    data_dir = root / name
    with server(data_dir, "--config", str(root / "keys.toml"), env=env, cwd=code) as url:
        live = Service(url, data_dir)
        warm = live.client("B").create("warm-up", MODEL)
        live.latency(warm)
        yield live


@dataclass(frozen=True)
class Case:
    alone: float
    behind: float

    @property
    def ratio(self) -> float:
        return self.behind / self.alone


def measure(live: Service, slow: SlowServer, behind_runs: int) -> Case:
    b, a = live.client("B"), live.client("A")
    alone = statistics.median(live.latency(b.create(f"alone {n}", MODEL)) for n in range(5))
    opened = slow.requests
    for n in range(3):
        a.create(f"slow {n}", MODEL, ImageInfos=[{"ImageUrl": slow.url(f"{live.data_dir.name}-{n}.png")}])
    if not slow.wait_for(lambda server: server.requests > opened, timeout=120):
        raise RuntimeError("the worker never fetched A's references")
    behind = statistics.median(live.latency(b.create(f"behind {n}", MODEL)) for n in range(behind_runs))
    return Case(alone, behind)


@contextmanager
def worktree(rev: str) -> Iterator[Path]:
    """A checkout of ``rev`` beside this one, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="aigc-baseline-"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--force", str(path), rev],
                   check=True, capture_output=True)  # fmt: skip
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=BASELINE, help="the commit to compare with (default: %(default)s)")
    parser.add_argument("--fetch-timeout", type=float, default=30.0, help="fetch.timeout for both (seconds)")
    args = parser.parse_args()
    load = os.getloadavg()
    cases: dict[str, Case] = {}
    with tempfile.TemporaryDirectory() as tmp, SlowServer(png()) as slow, worktree(args.baseline) as old:
        root = Path(tmp)
        runs = [("this code, fair", ROOT, "fair", 3), ("this code, fifo", ROOT, "fifo", 3),
                (f"{args.baseline}, fifo", old, "fifo", 1), (f"{args.baseline}, fair", old, "fair", 1)]  # fmt: skip
        for index, (name, code, policy, behind_runs) in enumerate(runs):
            with service(root, code, f"run-{index}", policy, args.fetch_timeout) as live:
                cases[name] = measure(live, slow, behind_runs)
            print(f"  {name}: alone {cases[name].alone * 1000:.0f} ms, behind {cases[name].behind:.2f} s", flush=True)

    print("Another key's plain task behind 3 tasks whose reference images come one byte a second")
    print(f"(tiny-random, one CPU worker, 1 torch thread, max_batch 8, fetch.timeout {args.fetch_timeout:g} s)")
    for name, case in cases.items():
        target = "  (target: <= 2x)" if name.startswith("this code") else ""
        print(f"   {name:24s} alone {case.alone * 1000:7.0f} ms   behind {case.behind:8.2f} s   "
              f"behind / alone {case.ratio:8.1f}x{target}")  # fmt: skip
    print(f"   load average {load[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end, {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
