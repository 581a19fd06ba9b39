"""Keeping the leases of the tasks a worker holds, and stopping a batch when it must stop.

Each claimed task is a ``Job``. While a batch runs (and until its images are stored),
``LeaseKeeper`` renews every job's lease from its own thread, every second, recording each job's
latest progress as it does: so a model that loads for minutes, or one very long step, cannot
outlast the lease, and the thread that drives the GPU never waits for the task store.
``StepWatch``, called by the pipeline after each denoising step, notes the progress in memory and
decides whether the batch goes on:

* a job whose lease was lost (another worker took its task over after this one stalled, or its
  key cancelled it, which clears the lease) is marked lost; the batch goes on for the others and
  the lost job's images are thrown away at the end; when every job is lost, the batch stops
  (LeaseLost);
* past shutdown's grace period the batch stops and every job is handed back (Interrupted);
* past ``worker.task_timeout`` the batch stops and its tasks fail (TaskTimeout).

Should the keeper fall a third of a lease behind (a wedged thread, or a test's simulated clock),
the step watch renews the leases itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from PIL import Image

from aigc_image.clock import Clock
from aigc_image.errors import Reason, TaskTimeout
from aigc_image.store.base import StoreUnavailable, TaskStore
from aigc_image.tasks import Claim, Task

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 1.0  # seconds between progress records of running tasks


class LeaseLost(Exception):
    """Other workers now own every task of the batch; abandon it without writing anything."""


class Interrupted(Exception):
    """Shutdown's grace period ran out mid-batch; hand the tasks back for another worker."""


@dataclass
class Job:
    """One claimed task: its lease, and its reference images once fetched (worker/references.py)."""

    claim: Claim
    lost: threading.Event = field(default_factory=threading.Event)
    references: tuple[Image.Image, ...] = ()
    fetch_seconds: float = 0.0  # this attempt's time fetching its reference images (fetch.max_total_seconds)
    progress: tuple[int, int] | None = None  # (steps done, steps), written with the next renewal
    renewed_at: float = 0.0  # clock.monotonic() of the last renewal
    cancelled: bool = False  # the lease was lost because the task's key cancelled it

    @property
    def why_lost(self) -> str:
        return "cancelled by its key" if self.cancelled else "lease lost"

    @property
    def task(self) -> Task:
        return self.claim.task

    @property
    def task_id(self) -> str:
        return self.claim.task.task_id


class Stopping(Protocol):
    def past_grace(self) -> bool: ...  # worker/shutdown.py


def renew(store: TaskStore, job: Job, lease_seconds: float, clock: Clock) -> None:
    """Renew one job's lease, recording its progress; a lease another worker owns now marks it lost."""
    try:
        if store.heartbeat(job.task_id, job.claim.token, lease_seconds, job.progress):
            job.renewed_at = clock.monotonic()
        else:
            job.cancelled = was_cancelled(store, job.task_id)
            job.lost.set()
    except StoreUnavailable as exc:  # keep generating: the next renewal retries, and the lease decides
        log.warning("task %s: heartbeat skipped, store unavailable: %s", job.task_id, exc,
                    extra={"task_id": job.task_id})  # fmt: skip


def was_cancelled(store: TaskStore, task_id: str) -> bool:
    """Whether a task whose lease this worker lost was cancelled by its key (for the log)."""
    try:
        task = store.get_now(task_id)
    except StoreUnavailable:
        return False
    return task is not None and task.reason is Reason.CANCELLED


class LeaseKeeper:
    """Renews the leases of ``jobs``, with their progress, from ``start`` until ``stop``."""

    def __init__(self, store: TaskStore, jobs: Sequence[Job], lease_seconds: float, clock: Clock) -> None:
        self._store = store
        self._jobs = jobs
        self._lease_seconds = lease_seconds
        self._clock = clock
        self.interval = min(PROGRESS_INTERVAL, lease_seconds / 3)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="leases", daemon=True)
        for job in jobs:
            job.renewed_at = clock.monotonic()  # the claim itself leased it

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def _renew(self) -> None:
        while not self._done.wait(self.interval):
            for job in self._jobs:
                if not job.lost.is_set():
                    renew(self._store, job, self._lease_seconds, self._clock)


class StepWatch:
    """The engine's step callback for one batch (see the module docstring)."""

    def __init__(
        self,
        store: TaskStore,
        jobs: Sequence[Job],
        clock: Clock,
        shutdown: Stopping,
        lease_seconds: float,
        task_timeout: float,
    ) -> None:
        self._store = store
        self._jobs = jobs
        self._clock = clock
        self._shutdown = shutdown
        self._lease_seconds = lease_seconds
        self._task_timeout = task_timeout
        self._started = clock.monotonic()
        self._last_try = float("-inf")  # the step watch's own last renewal, when the keeper fell behind

    def __call__(self, step: int, steps: int) -> None:
        if self._shutdown.past_grace():
            raise Interrupted()
        live = [job for job in self._jobs if not job.lost.is_set()]
        if not live:
            raise LeaseLost()
        now = self._clock.monotonic()
        if self._task_timeout and now - self._started > self._task_timeout:
            raise TaskTimeout(
                f"Generation took longer than this server allows (worker.task_timeout = {self._task_timeout:g} s) "
                f"and was stopped after {step} of {steps} steps; ask for fewer steps or fewer or smaller images."
            )
        for job in live:
            job.progress = (step, steps)
        behind = [job for job in live if now - job.renewed_at >= self._lease_seconds / 3]
        if behind and now - self._last_try >= self._lease_seconds / 3:  # the keeper fell behind
            self._last_try = now
            for job in behind:
                renew(self._store, job, self._lease_seconds, self._clock)
            if all(job.lost.is_set() for job in self._jobs):
                raise LeaseLost()
