"""Outcomes: the one place where an attempt's end is decided, written, logged and counted.

* Its images stored: ``DONE``.
* An exception: ``FAIL`` at once when it is permanent (errors.py), or when the attempts are used up;
  otherwise back to ``WAIT`` until the retry policy's delay has passed (worker/retry.py). A FAIL
  stores the error's reason beside its message. A task whose reference images could not be fetched
  (its key's own server) is retried behind the work queued meanwhile, its key charged its work
  again (store.retry_later); the time an attempt spent fetching is added to the task's.
* Shutdown's grace ran out: handed back to ``WAIT``, the attempt not counted.

Every FAIL and every retry is logged at WARNING with the task id, reason, attempts and message;
an error nobody named (not a ``ServiceError``) with its traceback, once for the tasks it ended.

When the task store is unavailable (a database restart), each of these writes is retried with
backoff until the store answers, so a finished image is never thrown away because of an outage;
past shutdown's grace the task is left to its lease. Retrying is safe: complete and fail answer
True again to the lease that already recorded them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from aigc_image.clock import Clock
from aigc_image.errors import ModelUnavailable, Reason, ServiceError, TaskError, reason_of
from aigc_image.fetch.fetcher import FetchFailed, FetchRefused
from aigc_image.metrics import IMAGES, TASKS_FAILED, TASKS_FINISHED
from aigc_image.store.base import StoreUnavailable, TaskStore
from aigc_image.tasks import TaskSpec
from aigc_image.worker.leases import Job, was_cancelled
from aigc_image.worker.reporting import Reporter
from aigc_image.worker.retry import Backoff, RetryPolicy
from aigc_image.worker.shutdown import Shutdown

log = logging.getLogger(__name__)


def message_of(error: BaseException) -> str:
    """What the task's client reads about ``error`` (a NUL written out: a hostile image server's
    status line may hold one, and PostgreSQL refuses it in text)."""
    if isinstance(error, TaskError):
        message = str(error)
    elif isinstance(error, FetchRefused):
        message = f"A reference image cannot be used: {error}."
    elif isinstance(error, FetchFailed):
        message = f"Fetching a reference image failed: {error}."
    else:
        message = f"Image generation failed: {type(error).__name__}: {error}"
    return message.replace("\x00", "\\x00")


def model_of(spec: TaskSpec) -> str:
    return f"{spec.model_name}:{spec.model_version}"


class Outcomes:
    def __init__(
        self, store: TaskStore, clock: Clock, retry: RetryPolicy, shutdown: Shutdown, reporter: Reporter
    ) -> None:
        self._store = store
        self._clock = clock
        self._retry = retry
        self._shutdown = shutdown
        self._reporter = reporter

    def completed(self, job: Job, keys: list[str]) -> bool | None:
        """DONE with the images stored at ``keys``. False: the lease was lost first (the caller
        discards them); None: unknown whether the store recorded it (they stay where they are)."""
        task_id, spec = job.task_id, job.task.spec
        completed = self._persist(self._store.complete, task_id, job.claim.token, keys)
        if completed:
            log.info("task %s: done, %d image(s)", task_id, len(keys), extra={"task_id": task_id})
            TASKS_FINISHED.labels(model_of(spec), "DONE").inc()
            IMAGES.labels(model_of(spec)).inc(len(keys))
        elif completed is False:
            why = "cancelled by its key" if was_cancelled(self._store, task_id) else "lease lost"
            log.warning("task %s: %s before completion; discarding this attempt's images", task_id, why,
                        extra={"task_id": task_id})  # fmt: skip
        return completed

    def failed(
        self, jobs: Sequence[Job], error: BaseException, message: str | None = None, reason: Reason | None = None
    ) -> None:
        """``jobs`` will not complete this attempt because of ``error``: FAIL, or back to the queue
        for another. ``message`` and ``reason``: what to record instead of the error's own."""
        message = message or message_of(error)
        reason = reason or reason_of(error)
        traceback: BaseException | None = None if isinstance(error, ServiceError) else error
        transient = self._retry.is_transient(error)
        requeue = isinstance(error, FetchFailed)  # its key's image server: behind the work queued meanwhile
        for job in jobs:
            if isinstance(error, ModelUnavailable):
                self._reporter.model_failed(model_of(job.task.spec), str(error))
            delay = self._retry.delay(job.task.attempts) if transient else None
            if delay is None:
                logged = self._fail(job, message, reason, traceback, after_retries=transient)
            else:
                logged = self._retry_later(job, delay, message, reason, traceback, requeue)
            traceback = None if logged else traceback  # once for the tasks one error ended

    def handed_back(self, jobs: Sequence[Job]) -> None:
        """Shutdown's grace ran out: back to the queue for another worker, the attempt not counted."""
        for job in jobs:
            if self._persist(self._store.release, job.task_id, job.claim.token, job.fetch_seconds):
                log.warning("task %s: interrupted by shutdown; handed back to the queue", job.task_id,
                            extra={"task_id": job.task_id})  # fmt: skip

    def fail_exhausted(self) -> None:
        """FAIL the tasks whose worker died or stalled on their last allowed attempt (any worker's)."""
        failed = self._store.fail_exhausted()
        if failed:
            log.warning("%d task(s) failed (%s): their worker stopped responding on every attempt", failed,
                        Reason.WORKER_LOST)  # fmt: skip
            TASKS_FAILED.labels(Reason.WORKER_LOST).inc(failed)

    def _retry_later(
        self, job: Job, delay: float, message: str, reason: Reason, traceback: BaseException | None, requeue: bool
    ) -> bool:
        """Back to the queue for another attempt after ``delay`` (``requeue``: behind the work queued
        meanwhile); whether it was (and logged)."""
        task_id, attempts = job.task_id, job.task.attempts
        retry_at = self._clock.now() + delay
        if not self._persist(self._store.retry_later, task_id, job.claim.token, retry_at, message, job.fetch_seconds,
                             requeue):  # fmt: skip
            return False
        log.warning("task %s: attempt %d failed (%s); retrying in %.1f s: %s", task_id, attempts, reason, delay,
                    message, exc_info=traceback, extra={"task_id": task_id})  # fmt: skip
        return True

    def _fail(
        self, job: Job, message: str, reason: Reason, traceback: BaseException | None, after_retries: bool = False
    ) -> bool:
        """FAIL with ``message`` and ``reason``; whether it was (and logged)."""
        task_id, attempts = job.task_id, job.task.attempts
        if after_retries and attempts > 1:
            message = f"{message} (after {attempts} attempts)"
        failed = self._persist(self._store.fail, task_id, job.claim.token, message, reason, job.fetch_seconds)
        if failed:
            log.warning("task %s: FAIL (%s) on attempt %d: %s", task_id, reason, attempts, message,
                        exc_info=traceback, extra={"task_id": task_id})  # fmt: skip
            TASKS_FINISHED.labels(model_of(job.task.spec), "FAIL").inc()
            TASKS_FAILED.labels(reason).inc()
        elif failed is False:
            log.warning("task %s: lease lost before recording failure", task_id, extra={"task_id": task_id})
        return bool(failed)

    def _persist(self, write: Callable[..., bool], task_id: str, *args: Any) -> bool | None:
        """A task's final write, retried while the store is unavailable: what the store answered,
        or None if shutdown's grace ran out first (the lease then expires and another worker runs
        the task again)."""
        backoff = Backoff()
        while True:
            try:
                return write(task_id, *args)
            except StoreUnavailable as exc:
                if self._shutdown.past_grace():
                    log.error("store unavailable past the shutdown grace; leaving %s to its lease", task_id)
                    return None
                delay = backoff.next_delay()
                log.warning("task %s: store unavailable (%s); retrying in %.1f s", task_id, exc, delay,
                            extra={"task_id": task_id})  # fmt: skip
                self._clock.sleep(delay)
