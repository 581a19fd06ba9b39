"""Prometheus metrics, named ``aigc_image_*`` (docs/operations.md lists them with a scrape config).

The API counts requests; workers count tasks, images, batches and generation time. ``serve`` runs
its workers as child processes, so it points every process at one directory of memory-mapped
files (prometheus_client's multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``, set by the CLI before
anything imports this module) and its ``/metrics`` adds them up. A standalone ``aigc-image worker``
serves its own with ``--metrics-port``. The queue and the workers' states are read from the task
store at scrape time, so they are true across processes and hosts.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import REGISTRY, Collector

from aigc_image.errors import Reason
from aigc_image.store.base import TaskStore, WorkerState
from aigc_image.tasks import Status

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"

REQUESTS = Counter(
    "aigc_image_requests", "API calls answered, by action and Code (OK for success).", ["action", "code"]
)
TASKS_FINISHED = Counter("aigc_image_tasks_finished", "Tasks that ended, by model and status.", ["model", "status"])
# One series per errors.Reason, so the label has a fixed set of values; they start at 0.
TASKS_FAILED = Counter("aigc_image_tasks_failed", "Tasks that ended FAIL, by reason (errors.Reason).", ["reason"])
for _reason in Reason:
    TASKS_FAILED.labels(_reason)
IMAGES = Counter("aigc_image_images", "Images generated and stored, by model.", ["model"])
QUEUE_WAIT = Histogram(
    "aigc_image_queue_wait_seconds",
    "Time from a task's creation to its first claim by a worker, by its key's weight.",
    ["weight"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
)
GENERATION = Histogram(
    "aigc_image_generation_seconds",
    "Duration of one pipeline call (a batch), by model.",
    ["model"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300, 600),
)
BATCH_SIZE = Histogram(
    "aigc_image_batch_size", "Tasks served by one pipeline call.", buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32)
)
MODEL_LOADS = Counter(
    "aigc_image_model_loads", "Models loaded by workers (at start, or swapped in for a task), by model.", ["model"]
)
TASKS_CANCELLED = Counter(
    "aigc_image_tasks_cancelled", "Tasks cancelled by their key, by the status they had (WAIT, RUN).", ["status"]
)
GPU_MEMORY = Gauge(
    "aigc_image_gpu_memory_bytes",
    "GPU memory held by a worker's tensors, by device.",
    ["device"],
    multiprocess_mode="livesum",
)


def weight_label(weight: float) -> str:
    """A key's weight as a label value: ``1``, ``2``, ``0.5``. The weights operators configure are
    few, so the series per weight are few; SecretIds never become labels."""
    return f"{weight:g}"


class StoreCollector(Collector):
    """The queue and the workers as the task store has them, read at each scrape."""

    def __init__(self, store: TaskStore, now: float) -> None:
        self._store = store
        self._now = now

    def collect(self) -> Iterator[Any]:
        counts = self._store.queue_counts()
        yield GaugeMetricFamily("aigc_image_tasks_waiting", "Tasks waiting for a worker.", counts[Status.WAIT])
        yield GaugeMetricFamily("aigc_image_tasks_running", "Tasks a worker is running.", counts[Status.RUN])
        by_weight = self._store.waiting_by_weight()
        keys = GaugeMetricFamily("aigc_image_keys_waiting", "Keys with tasks waiting, by weight.", labels=["weight"])
        tasks = GaugeMetricFamily(
            "aigc_image_tasks_waiting_by_weight", "Tasks waiting, by their key's weight.", labels=["weight"]
        )
        for weight, (key_count, task_count) in sorted(by_weight.items()):
            keys.add_metric([weight_label(weight)], key_count)
            tasks.add_metric([weight_label(weight)], task_count)
        yield keys
        yield tasks
        workers = GaugeMetricFamily("aigc_image_workers", "Workers alive, by state.", labels=["state"])
        alive = [w for w in self._store.workers() if w.alive(self._now)]
        for state in WorkerState:
            workers.add_metric([state], sum(1 for w in alive if w.state is state))
        yield workers


def exposition(store: TaskStore, now: float) -> bytes:
    """The text /metrics answers: every process's metrics, and the store's view."""
    processes = REGISTRY  # this process's own
    if os.environ.get(MULTIPROCESS_DIR):
        processes = CollectorRegistry()
        MultiProcessCollector(processes)  # type: ignore[no-untyped-call]
    from_store = CollectorRegistry()
    from_store.register(StoreCollector(store, now))
    return generate_latest(processes) + generate_latest(from_store)
