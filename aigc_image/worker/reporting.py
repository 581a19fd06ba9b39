"""Reporting: what a worker is doing, as its stages tell it, written to the task store for
``/readyz``, the operator page and the ``aigc_image_workers`` gauge.

A report goes every REPORT_INTERVAL seconds from its own thread, and at once when a reader would
otherwise be wrong for seconds: a model newly loaded, the worker gone idle, a stop asked for. A
report that cannot be written (the store is unavailable) is skipped: the next one says the same.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from aigc_image.clock import Clock
from aigc_image.engines.base import Engine
from aigc_image.metrics import GPU_MEMORY, MODEL_LOADS
from aigc_image.store.base import REPORT_INTERVAL, StoreUnavailable, TaskStore, WorkerRecord, WorkerState
from aigc_image.worker.shutdown import Shutdown

log = logging.getLogger(__name__)


class Reporter:
    """The worker's activity (one lock: the stages write it, the report thread reads it) and its reports."""

    def __init__(
        self, store: TaskStore, clock: Clock, engine: Engine, shutdown: Shutdown, worker_id: str, device: str
    ) -> None:
        self.worker_id = worker_id
        self.device = device  # as reported: cuda:N before pinning
        self._store = store
        self._clock = clock
        self._engine = engine
        self._shutdown = shutdown
        self._started_at = clock.now()
        self._lock = threading.Lock()
        self._generating: list[str] = []  # task ids
        self._delivering: set[str] = set()  # task ids whose images are being stored
        self._fetching: set[str] = set()  # task ids whose reference images are being fetched
        self._failed: dict[str, str] = {}  # model label → why it could not load
        self._reported_models: list[str] = []  # the loaded models as last reported
        self._models_changed_at = 0.0  # clock.now() when a model was last loaded (claims' affinity)
        self._soon = threading.Event()  # report now, not at the next REPORT_INTERVAL
        self._thread = threading.Thread(target=self._report_until_stopped, name="worker-report", daemon=True)

    # -- what the stages tell it ------------------------------------------------------------------

    @contextmanager
    def generating(self, task_ids: Sequence[str]) -> Iterator[None]:
        with self._lock:
            self._generating = list(task_ids)
        try:
            yield
        finally:
            with self._lock:
                self._generating = []

    def delivering(self, task_ids: Sequence[str]) -> None:
        with self._lock:
            self._delivering |= set(task_ids)

    def delivered(self, task_ids: Sequence[str]) -> None:
        with self._lock:
            self._delivering -= set(task_ids)
        self._maybe_idle()

    def fetching(self, task_ids: Sequence[str]) -> None:
        with self._lock:
            self._fetching |= set(task_ids)

    def fetched(self, task_ids: Sequence[str]) -> None:
        with self._lock:
            self._fetching -= set(task_ids)
        self._maybe_idle()

    def _maybe_idle(self) -> None:
        with self._lock:
            idle = not self._delivering and not self._generating and not self._fetching
        if idle:  # the operator page should not show it busy for seconds
            self.soon()

    def model_failed(self, label: str, why: str) -> None:
        with self._lock:
            self._failed[label] = why

    def model_loaded(self, label: str, newly: bool = False) -> None:
        """``label`` serves tasks; ``newly``: it was loaded just now (counted, and claims' affinity
        measures its wait for other models from now)."""
        with self._lock:
            self._failed.pop(label, None)
            reported = self._reported_models
            if newly:
                self._models_changed_at = self._clock.now()
        if newly:
            MODEL_LOADS.labels(label).inc()
        if self._engine.loaded() != reported:  # /readyz and the operator page learn of it now
            self.soon()

    def loaded_models(self) -> tuple[list[str], float]:
        """The models loaded now, and since when this set has been what it is (clock.now())."""
        with self._lock:
            changed_at = self._models_changed_at
        return self._engine.loaded(), changed_at

    def soon(self) -> None:
        self._soon.set()

    # -- the reports ------------------------------------------------------------------------------

    def record(self) -> WorkerRecord:
        """What this worker is doing now."""
        with self._lock:
            running = self._generating + sorted(self._delivering) + sorted(self._fetching)
            failed = dict(self._failed)
        state = WorkerState.BUSY if running else WorkerState.IDLE
        if self._shutdown.requested:
            state = WorkerState.STOPPING
        return WorkerRecord(
            worker_id=self.worker_id, host=socket.gethostname(), device=self.device, started_at=self._started_at,
            seen_at=self._clock.now(), state=state, loaded=self._engine.loaded(), failed=failed, running=running,
        )  # fmt: skip

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        """Once a stop was requested: wait for the last report."""
        self.soon()
        self._thread.join()

    def _report_until_stopped(self) -> None:
        while True:
            stopping = self._shutdown.requested
            self._report()
            if stopping:
                return
            self._soon.wait(REPORT_INTERVAL)
            self._soon.clear()

    def _report(self) -> None:
        in_use = getattr(self._engine, "memory_in_use", lambda: None)()
        if in_use is not None:
            GPU_MEMORY.labels(self.device).set(in_use)
        try:
            record = self.record()
            self._store.record_worker(record)
            with self._lock:
                self._reported_models = record.loaded
        except StoreUnavailable as exc:
            log.debug("worker report skipped: %s", exc)
        except Exception:  # a report is not worth the worker: say why, keep working
            log.exception("worker report failed")
