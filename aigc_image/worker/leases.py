"""Keeping the leases of the tasks a worker holds, and stopping a batch when it must stop.

Each claimed task is a ``Job``. While a batch runs, ``LeaseKeeper`` renews every job's lease from a
timer thread (so a model that loads for minutes, or one very long step, cannot outlast the lease),
and ``StepWatch``, called by the pipeline after each denoising step, records progress, renews the
leases too, and decides whether the batch goes on:

* a job whose lease was lost (another worker took its task over after this one stalled) is marked
  lost; the batch goes on for the others and the lost job's images are thrown away at the end;
  when every job is lost, the batch stops (LeaseLost);
* past shutdown's grace period the batch stops and every job is handed back (Interrupted);
* past ``worker.task_timeout`` the batch stops and its tasks fail (TaskTimeout).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from aigc_image.clock import Clock
from aigc_image.engines.base import GenerationRequest
from aigc_image.errors import TaskTimeout
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
    """One claimed task: its lease, and the request the engine gets for it."""

    claim: Claim
    lost: threading.Event = field(default_factory=threading.Event)
    request: GenerationRequest | None = None

    @property
    def task(self) -> Task:
        return self.claim.task

    @property
    def task_id(self) -> str:
        return self.claim.task.task_id


class Stopping(Protocol):
    def past_grace(self) -> bool: ...


class LeaseKeeper:
    """Renews the leases of ``jobs`` every third of a lease until the block ends."""

    def __init__(self, store: TaskStore, jobs: Sequence[Job], lease_seconds: float) -> None:
        self._store = store
        self._jobs = jobs
        self._lease_seconds = lease_seconds
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="leases", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _renew(self) -> None:
        while not self._done.wait(self._lease_seconds / 3):
            for job in self._jobs:
                if job.lost.is_set():
                    continue
                try:
                    if not self._store.heartbeat(job.task_id, job.claim.token, self._lease_seconds):
                        job.lost.set()  # the step watch drops it at the next step
                except StoreUnavailable as exc:
                    log.warning("task %s: heartbeat skipped, store unavailable: %s", job.task_id, exc,
                                extra={"task_id": job.task_id})  # fmt: skip


class StepWatch:
    """The engine's step callback for one batch (see the module docstring)."""

    def __init__(
        self,
        store: TaskStore,
        jobs: Sequence[Job],
        clock: Clock,
        worker: Stopping,
        lease_seconds: float,
        task_timeout: float,
    ) -> None:
        self._store = store
        self._jobs = jobs
        self._clock = clock
        self._worker = worker
        self._lease_seconds = lease_seconds
        self._task_timeout = task_timeout
        self._started = self._last = clock.monotonic()
        self._interval = min(PROGRESS_INTERVAL, lease_seconds / 3)

    def __call__(self, step: int, steps: int) -> None:
        if self._worker.past_grace():
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
        if now - self._last < self._interval:
            return
        self._last = now
        for job in live:
            try:
                renewed = self._store.heartbeat(job.task_id, job.claim.token, self._lease_seconds, (step, steps))
            except StoreUnavailable:
                return  # keep generating: the timer retries, and the lease decides if it was too long
            if not renewed:
                job.lost.set()
        if all(job.lost.is_set() for job in self._jobs):
            raise LeaseLost()
