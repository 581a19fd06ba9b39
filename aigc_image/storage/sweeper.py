"""Delete images whose URLs have expired (``storage.url_ttl`` after the task finished)."""

from __future__ import annotations

import logging
import threading

from aigc_image.clock import Clock
from aigc_image.storage.base import ResultStorage
from aigc_image.store.base import TaskStore

log = logging.getLogger(__name__)


class Sweeper:
    def __init__(self, store: TaskStore, storage: ResultStorage, clock: Clock, ttl: float) -> None:
        self.store = store
        self.storage = storage
        self.clock = clock
        self.ttl = ttl

    def sweep(self, batch: int = 500) -> int:
        """Delete one batch of expired results; returns how many tasks were purged."""
        expired = self.store.finished_before(self.clock.now() - self.ttl, batch)
        for task in expired:
            for key in task.result_keys:
                self.storage.delete(key)
            self.store.mark_results_purged(task.task_id)
        if expired:
            log.info("purged the images of %d expired task(s)", len(expired))
        return len(expired)

    def run(self, stop: threading.Event, interval: float) -> None:
        while not stop.wait(interval):
            try:
                while self.sweep() and not stop.is_set():
                    pass
            except Exception:
                log.exception("sweep failed; will retry")
