"""Delivery: each task's images reviewed, labelled, encoded and stored, then the task completed,
on other threads while the worker already generates its next batch.

So the GPU does not wait for PNG encoding or uploads. At most MAX_IN_DELIVERY batches are in
delivery: the worker waits for the oldest before it adds one more. Each task keeps its lease until
its images are stored and it is complete; its fate is its own:

* a lease lost meanwhile (another worker took the task over): nothing is written for it;
* an image refused by review: the task fails, nothing is stored;
* storing fails: what was stored is deleted and the task is retried (worker/outcomes.py);
* the completion meets a lost lease: its images are deleted, the newer attempt stands.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from PIL import Image

from aigc_image.errors import ContentRefused, Reason, ServiceError
from aigc_image.media.labels import implicit_label
from aigc_image.results.base import result_key
from aigc_image.results.buckets import Results, UserBucket
from aigc_image.tasks import TaskSpec
from aigc_image.worker.generation import Delivered
from aigc_image.worker.leases import Job, LeaseKeeper
from aigc_image.worker.outcomes import Outcomes
from aigc_image.worker.reporting import Reporter
from aigc_image.worker.screening import ImageScreen

log = logging.getLogger(__name__)
DELIVERY_THREADS = 4  # images reviewed, encoded and stored at once
MAX_IN_DELIVERY = 4  # batches whose images are being stored while the next one generates
Render = Callable[[Image.Image, TaskSpec, dict[str, str]], bytes]  # worker/render.py


class Delivery:
    def __init__(
        self,
        storage: Results,
        render: Render,
        screen: ImageScreen,
        outcomes: Outcomes,
        reporter: Reporter,
        content_producer: str,
    ) -> None:
        self._storage = storage
        self._render = render  # image → stored bytes: worker/render.py's Renderer encodes off this process
        self._screen = screen
        self._outcomes = outcomes
        self._reporter = reporter
        self._content_producer = content_producer  # in every image's implicit AI-generated label
        self._in_delivery: deque[Future[None]] = deque()  # oldest first
        self._batches = ThreadPoolExecutor(MAX_IN_DELIVERY, thread_name_prefix="delivery")
        self._tasks = ThreadPoolExecutor(DELIVERY_THREADS, thread_name_prefix="deliver")

    def submit(self, delivered: Delivered, keeper: LeaseKeeper) -> None:
        """Deliver a batch's images; ``keeper`` keeps their leases until then. The caller has made
        room (``wait(leave=MAX_IN_DELIVERY - 1)``) and told the reporter they are in delivery."""
        self._in_delivery.append(self._batches.submit(self._deliver_batch, delivered, keeper))

    def wait(self, leave: int = 0) -> None:
        """Until no more than ``leave`` batches are in delivery (re-raising what went wrong)."""
        while len(self._in_delivery) > leave:
            self._in_delivery.popleft().result()

    def _deliver_batch(self, delivered: Delivered, keeper: LeaseKeeper) -> None:
        try:
            for done in [self._tasks.submit(self._deliver, job, images) for job, images in delivered]:
                done.result()
        finally:
            keeper.stop()
            self._reporter.delivered([job.task_id for job, _ in delivered])

    def _deliver(self, job: Job, images: list[Image.Image]) -> None:
        """Review, label, store and complete one task's images."""
        task, spec = job.task, job.task.spec
        if job.lost.is_set():
            log.warning("task %s: %s; abandoning this attempt", task.task_id, job.why_lost,
                        extra={"task_id": task.task_id})  # fmt: skip
            return
        try:
            for image in images:
                self._screen.check("generated image", "output_image", image)
        except ContentRefused as refused:
            self._outcomes.failed([job], refused)
            return
        bucket = UserBucket(spec.cos_region, spec.cos_bucket, spec.cos_path) if spec.cos_bucket else None
        keys = [
            self._storage.location(result_key(task.task_id, task.attempts, i, spec.output_format), bucket)
            for i in range(len(images))
        ]
        try:
            for index, (key, image) in enumerate(zip(keys, images, strict=True)):
                label = implicit_label(self._content_producer, f"{task.task_id}-{index}")
                self._storage.put(key, self._render(image, spec, label))
        except Exception as exc:
            self._discard(keys)
            message = f"Storing the images failed: {type(exc).__name__}: {exc}"
            # a refusal (StorageRefused) keeps its own reason; anything else failed to store
            self._outcomes.failed([job], exc, message, None if isinstance(exc, ServiceError) else Reason.STORAGE_FAILED)
            return
        if self._outcomes.completed(job, keys) is False:
            self._discard(keys)
        # None: unknown whether the store recorded it, so the images stay where they are.

    def _discard(self, keys: list[str]) -> None:
        for key in keys:
            try:
                self._storage.delete(key)
            except Exception:
                log.exception("could not delete %s", key)
