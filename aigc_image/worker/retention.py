"""Enforce retention: images ``storage.url_ttl`` after their task finished, task records
``storage.task_retention`` after it finished. Runs in the API process (``serve``)."""

from __future__ import annotations

import logging
import threading

from aigc_image.clock import Clock
from aigc_image.results.buckets import Results
from aigc_image.store.base import StoreUnavailable, TaskStore

log = logging.getLogger(__name__)


class Sweeper:
    def __init__(self, store: TaskStore, storage: Results, clock: Clock, ttl: float, task_retention: float) -> None:
        self.store = store
        self.storage = storage
        self.clock = clock
        self.ttl = ttl
        self.task_retention = max(task_retention, ttl)  # a record outlives its images' URLs

    def sweep(self, batch: int = 500) -> int:
        """Delete one batch of expired images and of expired task records; returns how many."""
        now = self.clock.now()
        expired = self.store.finished_before(now - self.ttl, batch)
        for task in expired:
            self._delete_images(task.task_id, task.result_keys)
            self.store.mark_results_purged(task.task_id)  # even if some could not go: never stall on one
        deleted = self.store.delete_finished_before(now - self.task_retention, batch)
        for task in deleted:
            if not task.results_purged:
                self._delete_images(task.task_id, task.result_keys)
        if expired or deleted:
            log.info("retention: purged images of %d task(s), deleted %d task record(s)", len(expired), len(deleted))
        return len(expired) + len(deleted)

    def _delete_images(self, task_id: str, locations: tuple[str, ...]) -> None:
        """The service's own copies; images in a user's bucket (StoreCosParam) are the user's to keep.

        An image that cannot be deleted (access denied, a file that will not go) is logged once and
        left behind; its URL has expired already, so it is no longer served."""
        for location in locations:
            if self.storage.in_user_bucket(location):
                continue
            try:
                self.storage.delete(location)
            except Exception as exc:
                log.error("retention: could not delete %s of task %s (%s: %s); left in place",
                          location, task_id, type(exc).__name__, exc)  # fmt: skip

    def run(self, stop: threading.Event, interval: float) -> None:
        while not stop.wait(interval):
            try:
                while self.sweep() and not stop.is_set():
                    pass
            except StoreUnavailable as exc:
                log.warning("sweep skipped, task store unavailable: %s", exc)
            except Exception:
                log.exception("sweep failed; will retry")
