"""The worker loop: claim a batch of tasks, generate, store the images, complete each.

A worker claims up to ``worker.max_batch`` waiting tasks that can share one pipeline call (the
same batch key: model, size, steps, guidance, kind; tasks.py), oldest first, and runs them as one
call, in chunks of the model's own ``max_batch``. Each task keeps its own prompt, seed, image
count, lease, progress, review, labels and result, and its own fate:

* a reference image that cannot be fetched or is refused fails or retries only its task;
* a lease lost mid-batch (another worker took the task over after this one stalled) drops only
  that task: its images are thrown away and nothing is written for it (worker/leases.py);
* an output image refused by review fails only its task;
* out of memory splits the batch in halves and tries each again; a single task that runs out
  fails, and is not retried;
* shutdown's grace period running out hands every task of the batch back;
* a task whose worker died or stalled (a crash in a native library, the kernel's OOM killer)
  is taken over alone, after the worker's other batches are stored and with none generating
  beside it: a task that kills its worker fails on its own after ``worker.max_attempts``, and
  the tasks that died with it the first time run again without it.

While a batch's images are reviewed, encoded (in child processes: worker/render.py) and stored,
on other threads, the worker already claims and generates the next batch, so the GPU does not
wait for PNG encoding or uploads. At most MAX_IN_DELIVERY batches are in delivery: a batch that
would make one more first waits for the oldest. Each task keeps its lease until its images are
stored and it is complete.

When the task store is unreachable (a database restart), the worker keeps what it has:
heartbeats that fail are skipped (the lease decides), and the final write of a task
(complete, fail, retry, release) is retried with backoff until the store answers, so a
finished image is never thrown away because of an outage.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from PIL import Image

from aigc_image.catalog import Catalog, ModelEntry, ModelLabel
from aigc_image.clock import Clock
from aigc_image.engines.base import Engine, GenerationRequest
from aigc_image.errors import (
    ContentRefused,
    ModelUnavailable,
    OutOfMemory,
    Reason,
    TaskError,
    UnreviewedContent,
    reason_of,
)
from aigc_image.fetch.fetcher import Fetcher, FetchFailed, FetchRefused
from aigc_image.fetch.images import decode_reference
from aigc_image.media.labels import implicit_label
from aigc_image.metrics import (
    BATCH_SIZE,
    GENERATION,
    GPU_MEMORY,
    IMAGES,
    MODEL_LOADS,
    QUEUE_WAIT,
    TASKS_FINISHED,
    weight_label,
)
from aigc_image.moderation.review import ContentReview, ReviewUnavailable
from aigc_image.results.base import result_key
from aigc_image.results.buckets import Results
from aigc_image.store.base import REPORT_INTERVAL, StoreUnavailable, TaskStore, WorkerRecord
from aigc_image.store.base import worker_id as local_worker_id
from aigc_image.tasks import PANORAMA, Claim, TaskSpec
from aigc_image.worker.leases import Interrupted, Job, LeaseKeeper, LeaseLost, StepWatch, was_cancelled
from aigc_image.worker.render import render
from aigc_image.worker.retry import Backoff, RetryPolicy

log = logging.getLogger(__name__)
DELIVERY_THREADS = 4  # images reviewed, encoded and stored at once
MAX_IN_DELIVERY = 4  # batches whose images are being stored while the next one generates
Delivered = list[tuple[Job, list[Image.Image]]]
Render = Callable[[Image.Image, TaskSpec, dict[str, str]], bytes]


class Worker:
    def __init__(
        self,
        store: TaskStore,
        engine: Engine,
        catalog: Catalog,
        storage: Results,
        clock: Clock,
        *,
        lease_seconds: float,
        poll_interval: float,
        worker_id: str | None = None,
        review: ContentReview | None = None,
        shutdown_grace: float = 30.0,
        retry: RetryPolicy | None = None,
        content_producer: str = "aigc-image",
        fetcher: Fetcher | None = None,
        max_reference_pixels: int = 4096 * 4096,
        task_timeout: float = 0.0,
        max_batch: int = 1,
        batch_wait: float = 0.0,
        device: str | None = None,
        render: Render = render,
    ) -> None:
        self.store = store
        self.engine = engine
        self.catalog = catalog
        self.storage = storage
        self.clock = clock
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self.worker_id = worker_id or local_worker_id(os.getpid())
        self.render = render  # image → stored bytes: worker/render.py's Renderer encodes off this process
        self.device = device or str(getattr(engine, "device", "cpu"))  # as reported: cuda:N before pinning
        self.review = review
        self.shutdown_grace = shutdown_grace
        self.retry = retry or RetryPolicy()
        self.content_producer = content_producer
        self.fetcher = fetcher
        self.max_reference_pixels = max_reference_pixels
        self.task_timeout = task_timeout
        self.max_batch = max(1, max_batch)
        self.batch_wait = batch_wait  # seconds a part-filled batch waits for more (worker.batch_wait_ms)
        self._stop = threading.Event()
        self._report_soon = threading.Event()  # report now, not at the next REPORT_INTERVAL
        self._reported_models: list[str] = []  # the loaded models as last reported
        self._stop_requested_at: float | None = None
        self._started_at = clock.now()
        self._running: list[str] = []  # task ids in generation
        self._delivering: set[str] = set()  # task ids whose images are being stored (under _lock)
        self._lock = threading.Lock()
        self._deliveries: deque[Future[None]] = deque()  # the batches in delivery, oldest first
        self._batches = ThreadPoolExecutor(MAX_IN_DELIVERY, thread_name_prefix="delivery")
        self._deliverers = ThreadPoolExecutor(DELIVERY_THREADS, thread_name_prefix="deliver")
        self.failed_models: dict[str, str] = {}  # model label → why it could not load
        self._models_changed_at = 0.0  # clock.now() when a model was last loaded (claims' affinity)

    def preload(self, labels: list[str]) -> None:
        """Load models before the first task. One that cannot load is logged in one line and
        reported (/readyz); the worker serves the others, and tasks for it fail with the reason."""
        for label in labels:
            started = time.monotonic()
            try:
                entry = self.catalog.lookup(ModelLabel.parse(label))
                self.engine.load(entry)
            except (TaskError, ValueError) as exc:
                log.error("preload of %s failed: %s", label, exc)
                self.failed_models[label] = str(exc)
                continue
            MODEL_LOADS.labels(entry.label).inc()
            self._models_changed_at = self.clock.now()
            log.info("preloaded %s in %.1f s", entry.label, time.monotonic() - started)

    def run(self) -> None:
        """Work until ``request_stop``; the task in hand gets ``shutdown_grace`` seconds to finish.
        Meanwhile the worker reports itself to the store every REPORT_INTERVAL seconds."""
        log.info("worker %s ready", self.worker_id)
        reporter = threading.Thread(target=self._report_until_stopped, name="worker-report", daemon=True)
        reporter.start()
        backoff = Backoff()
        try:
            while not self._stop.is_set():
                try:
                    if not self.run_once(overlap=True):
                        self.store.fail_exhausted()
                        self.store.wait_for_work(self.poll_interval)
                    backoff.reset()
                except StoreUnavailable as exc:
                    delay = backoff.next_delay()
                    log.warning("task store unavailable (%s); trying again in %.1f s", exc, delay)
                    self._stop.wait(delay)
        finally:
            self.wait_for_delivery()
            reporter.join()
            with contextlib.suppress(StoreUnavailable):
                self.store.forget_worker(self.worker_id)

    def record(self) -> WorkerRecord:
        """What this worker is doing now, as /readyz and the operator page show it."""
        with self._lock:
            running = self._running + sorted(self._delivering)
        state = "stopping" if self.stopping else ("busy" if running else "idle")
        return WorkerRecord(
            worker_id=self.worker_id, host=socket.gethostname(), device=self.device,
            started_at=self._started_at, seen_at=self.clock.now(), state=state, loaded=self.engine.loaded(),
            failed=dict(self.failed_models), running=running,
        )  # fmt: skip

    def _report_until_stopped(self) -> None:
        while True:
            in_use = getattr(self.engine, "memory_in_use", lambda: None)()
            if in_use is not None:
                GPU_MEMORY.labels(self.device).set(in_use)
            try:
                record = self.record()
                self.store.record_worker(record)
                self._reported_models = record.loaded
            except StoreUnavailable as exc:
                log.debug("worker report skipped: %s", exc)
            except Exception:  # a report is not worth the worker: say why, keep working
                log.exception("worker report failed")
            self._report_soon.wait(REPORT_INTERVAL)
            self._report_soon.clear()
            if self._stop.is_set():
                return

    def request_stop(self) -> None:
        """Stop claiming. A running task that outlives the grace period is interrupted at its
        next step and handed back (WAIT), so another worker runs it. Safe from signal handlers."""
        if self._stop_requested_at is None:
            self._stop_requested_at = self.clock.monotonic()
        self._stop.set()
        self._report_soon.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def past_grace(self) -> bool:
        started = self._stop_requested_at
        return started is not None and self.clock.monotonic() - started >= self.shutdown_grace

    def run_once(self, overlap: bool = False) -> bool:
        """Claim and process one batch of compatible tasks; False when none was waiting. With
        ``overlap`` (the run loop), its images may still be in delivery when this returns."""
        claims = self.store.claim(
            self.worker_id, self.max_batch, self.lease_seconds, loaded=self.engine.loaded(),
            loaded_since=self._models_changed_at,
        )  # fmt: skip
        alone = bool(claims) and claims[0].alone
        if claims and not alone and len(claims) < self.max_batch and self.batch_wait > 0:
            claims += self._admit_more(claims[0].task.spec.batch_key, self.max_batch - len(claims))
        if claims:
            self.process(claims, overlap and not alone)
        return bool(claims)

    def _admit_more(self, batch_key: str, room: int) -> list[Claim]:
        """``worker.batch_wait_ms``: wait that long for more tasks that fit the batch."""
        more: list[Claim] = []
        deadline = self.clock.monotonic() + self.batch_wait
        while True:  # claim first: tasks created before the wait began have already sent their wake-up
            more += self.store.claim(self.worker_id, room - len(more), self.lease_seconds, batch_key=batch_key)
            left = deadline - self.clock.monotonic()
            if len(more) >= room or left <= 0:
                return more
            self.store.wait_for_work(left)

    def process(self, claims: list[Claim], overlap: bool = False) -> None:
        """Run claimed tasks (one batch key) to their end, keeping their leases meanwhile. With
        ``overlap``, return once the images are made, leaving their delivery to run meanwhile."""
        jobs = [Job(claim) for claim in claims]
        self._running = [job.task_id for job in jobs]
        for job in jobs:
            if job.task.attempts == 1:
                QUEUE_WAIT.labels(weight_label(job.claim.weight)).observe(
                    max(0.0, self.clock.now() - job.task.created_at)
                )
        keeper = LeaseKeeper(self.store, jobs, self.lease_seconds, self.clock)
        keeper.start()
        try:
            if claims[0].alone:  # a task that may kill its worker runs with nothing else in it
                self.wait_for_delivery()
            delivered = self._run(jobs)
            self.wait_for_delivery(leave=MAX_IN_DELIVERY - 1)
        except BaseException:
            keeper.stop()
            raise
        finally:
            self._running = []
        with self._lock:
            self._delivering |= {job.task_id for job, _ in delivered}
        self._deliveries.append(self._batches.submit(self._deliver_batch, delivered, keeper))
        if not overlap:
            self.wait_for_delivery()

    def wait_for_delivery(self, leave: int = 0) -> None:
        """Until no more than ``leave`` batches are in delivery (re-raising what went wrong)."""
        while len(self._deliveries) > leave:
            self._deliveries.popleft().result()

    def _deliver_batch(self, delivered: Delivered, keeper: LeaseKeeper) -> None:
        try:
            for done in [self._deliverers.submit(self._deliver, job, images) for job, images in delivered]:
                done.result()
        finally:
            keeper.stop()
            with self._lock:
                self._delivering -= {job.task_id for job, _ in delivered}
                if not self._delivering and not self._running:
                    self._report_soon.set()  # idle now: the operator page should not show it busy for 5 s

    def _run(self, jobs: list[Job]) -> Delivered:
        """Generate the images of ``jobs``; the tasks that have them, with their images."""
        spec = jobs[0].task.spec  # a batch shares its model, size, steps and kind
        for job in jobs:
            log.info("task %s: attempt %d on %s:%s%s", job.task_id, job.task.attempts, spec.model_name,
                     spec.model_version, ", alone: its last attempt never ended" if job.claim.alone else "",
                     extra={"task_id": job.task_id})  # fmt: skip
        try:
            entry = self.catalog.resolve(spec.model_name, spec.model_version)
        except TaskError as exc:
            for job in jobs:
                self._settle(job, exc)
            return []
        ready = []
        for job in jobs:  # each fetches its own references: a refused one fails only its task
            try:
                job.request = self._request(job.task.spec)
            except Exception as exc:
                self._settle(job, exc)
                continue
            ready.append(job)
        delivered: Delivered = []
        for start in range(0, len(ready), max(1, entry.max_batch)):
            delivered += self._generate(entry, ready[start : start + entry.max_batch])
        return delivered

    def _generate(self, entry: ModelEntry, jobs: list[Job]) -> Delivered:
        """One engine call for ``jobs``; out of memory splits them in halves and tries again."""
        if not jobs:
            return []
        watch = StepWatch(self.store, jobs, self.clock, self, self.lease_seconds, self.task_timeout)
        started, loaded = time.monotonic(), self.engine.loaded()
        try:
            outputs = self.engine.generate(entry, [job.request for job in jobs if job.request], watch)
            GENERATION.labels(entry.label).observe(time.monotonic() - started)
            BATCH_SIZE.observe(len(jobs))
        except OutOfMemory as exc:
            if len(jobs) == 1:
                self._settle(jobs[0], exc)
                return []
            half = len(jobs) // 2
            log.warning("out of memory with a batch of %d; trying halves of %d and %d", len(jobs), half,
                        len(jobs) - half)  # fmt: skip
            return self._generate(entry, jobs[:half]) + self._generate(entry, jobs[half:])
        except LeaseLost:  # every task of the batch was cancelled or taken over
            for job in jobs:
                log.warning("task %s: %s; abandoning this attempt", job.task_id, job.why_lost,
                            extra={"task_id": job.task_id})  # fmt: skip
            return []
        except Interrupted:
            for job in jobs:
                if self._persist(self.store.release, job.task_id, job.claim.token):
                    log.warning("task %s: interrupted by shutdown; handed back to the queue", job.task_id,
                                extra={"task_id": job.task_id})  # fmt: skip
            return []
        except Exception as exc:
            if not isinstance(exc, TaskError):
                log.exception("generation failed for %d task(s)", len(jobs))
            for job in jobs:
                self._settle(job, exc)
            return []
        self.failed_models.pop(entry.label, None)  # it loads now
        if entry.label not in loaded:
            MODEL_LOADS.labels(entry.label).inc()
            self._models_changed_at = self.clock.now()
        if self.engine.loaded() != self._reported_models:
            self._report_soon.set()  # /readyz and the operator page learn of a newly loaded model now
        return list(zip(jobs, outputs, strict=True))

    def _request(self, spec: TaskSpec) -> GenerationRequest:
        return GenerationRequest(
            prompt=spec.enhanced_prompt or spec.prompt,
            negative_prompt=spec.negative_prompt,
            count=spec.image_count,
            width=spec.width,
            height=spec.height,
            steps=spec.steps,
            guidance_scale=spec.guidance_scale,
            seed=spec.seed,
            images=self._references(spec),
            strength=spec.strength,
            panorama=spec.scene_type == PANORAMA,
            sampler=spec.sampler or None,
            loras=spec.loras,
        )

    def _settle(self, job: Job, error: Exception) -> None:
        """A task that will not complete this attempt: failed, or back to the queue for another."""
        spec = job.task.spec
        if isinstance(error, ModelUnavailable):
            self.failed_models[f"{spec.model_name}:{spec.model_version}"] = str(error)
        if isinstance(error, TaskError):
            message = str(error)
        elif isinstance(error, FetchRefused):
            message = f"A reference image cannot be used: {error}."
        elif isinstance(error, FetchFailed):
            message = f"Fetching a reference image failed: {error}."
        else:
            message = f"Image generation failed: {type(error).__name__}: {error}"
        self._fail_or_retry(job.claim, error, message)

    def _deliver(self, job: Job, images: list[Image.Image]) -> None:
        """Review, label, store and complete one task's images."""
        task, spec = job.task, job.task.spec
        if job.lost.is_set():
            log.warning("task %s: %s; abandoning this attempt", task.task_id, job.why_lost,
                        extra={"task_id": task.task_id})  # fmt: skip
            return
        try:
            for image in images:
                self._review("generated image", "output_image", image)
        except ContentRefused as refused:
            self._fail(job.claim, str(refused), refused.reason)
            return
        keys = [
            self.storage.location(spec, result_key(task.task_id, task.attempts, i, spec.output_format))
            for i in range(len(images))
        ]
        try:
            for index, (key, image) in enumerate(zip(keys, images, strict=True)):
                label = implicit_label(self.content_producer, f"{task.task_id}-{index}")
                self.storage.put(key, self.render(image, spec, label))
        except Exception as exc:
            log.exception("task %s: storing results failed", task.task_id, extra={"task_id": task.task_id})
            self._discard(keys)
            message = f"Storing the images failed: {type(exc).__name__}: {exc}"
            self._fail_or_retry(job.claim, exc, message, Reason.STORAGE_FAILED)
            return
        completed = self._persist(self.store.complete, task.task_id, job.claim.token, keys)
        if completed:
            log.info("task %s: done, %d image(s)", task.task_id, len(keys), extra={"task_id": task.task_id})
            model = f"{spec.model_name}:{spec.model_version}"
            TASKS_FINISHED.labels(model, "DONE").inc()
            IMAGES.labels(model).inc(len(keys))
        elif completed is False:
            why = "cancelled by its key" if was_cancelled(self.store, task.task_id) else "lease lost"
            log.warning("task %s: %s before completion; discarding this attempt's images", task.task_id, why,
                        extra={"task_id": task.task_id})  # fmt: skip
            self._discard(keys)
        # None: unknown whether the store recorded it, so the images stay where they are.

    def _persist(self, write: Callable[..., bool], *args: Any) -> bool | None:
        """A task's final write, retried while the store is unavailable.

        Returns what the store answered, or None if shutdown's grace ran out first (the lease
        then expires and another worker runs the task again). Retrying is safe: complete and
        fail answer True again to the lease that already recorded them.
        """
        backoff = Backoff()
        while True:
            try:
                return write(*args)
            except StoreUnavailable as exc:
                if self.past_grace():
                    log.error("store unavailable past the shutdown grace; leaving %s to its lease", args[0])
                    return None
                delay = backoff.next_delay()
                log.warning(
                    "task %s: store unavailable (%s); retrying in %.1f s",
                    args[0],
                    exc,
                    delay,
                    extra={"task_id": args[0]},
                )
                self.clock.sleep(delay)

    def _references(self, spec: TaskSpec) -> tuple[Image.Image, ...]:
        """The task's reference images, fetched safely, decoded and reviewed."""
        if not spec.reference_urls:
            return ()
        images = []
        for index, url in enumerate(spec.reference_urls):
            try:
                if url.startswith("data:"):
                    data = uploaded(url)
                elif self.fetcher is None:
                    raise FetchRefused("this worker does not fetch reference images")
                else:
                    data = self.fetcher.fetch(url)
                image = decode_reference(data, self.max_reference_pixels)
            except FetchRefused as exc:
                raise FetchRefused(f"ImageInfos.{index}: {exc}") from None
            self._review(f"reference image {index}", "reference_image", image)
            images.append(image)
        return tuple(images)

    def _review(self, what: str, kind: str, image: Image.Image) -> None:
        """Raise ContentRefused unless ``image`` passes content review (an unreviewable one is refused)."""
        if self.review is None:
            return
        try:
            verdict = self.review.check_image(kind, image)
        except ReviewUnavailable as exc:
            log.error("%s review unavailable: %s", kind, exc)
            raise UnreviewedContent(f"Content review of the {what} is unavailable, so it was not used.") from None
        if not verdict.allowed:
            log.warning("%s refused by %s", kind, verdict.source)
            raise ContentRefused(f"The {what} was refused by content review.")

    def _fail_or_retry(self, claim: Claim, error: Exception, message: str, reason: Reason | None = None) -> None:
        """Permanent errors fail the task; transient ones send it back to the queue after a backoff,
        until the attempts run out. ``reason``: what to record instead of the error's own."""
        delay = self.retry.delay(claim.task.attempts) if self.retry.is_transient(error) else None
        if delay is None:
            attempts = claim.task.attempts
            if self.retry.is_transient(error) and attempts > 1:
                message = f"{message} (after {attempts} attempts)"
            self._fail(claim, message, reason or reason_of(error))
            return
        if self._persist(self.store.retry_later, claim.task.task_id, claim.token, self.clock.now() + delay, message):
            log.warning(
                "task %s: will retry in %.1f s: %s",
                claim.task.task_id,
                delay,
                message,
                extra={"task_id": claim.task.task_id},
            )

    def _fail(self, claim: Claim, message: str, reason: Reason) -> None:
        failed = self._persist(self.store.fail, claim.task.task_id, claim.token, message, reason)
        if failed:
            TASKS_FINISHED.labels(f"{claim.task.spec.model_name}:{claim.task.spec.model_version}", "FAIL").inc()
        if failed is False:
            log.warning(
                "task %s: lease lost before recording failure",
                claim.task.task_id,
                extra={"task_id": claim.task.task_id},
            )

    def _discard(self, keys: list[str]) -> None:
        for key in keys:
            try:
                self.storage.delete(key)
            except Exception:
                log.exception("could not delete %s", key)


def uploaded(url: str) -> bytes:
    """The bytes of a reference image sent with its request, as a base64 data: URL."""
    try:
        return base64.b64decode(url.partition(",")[2], validate=True)
    except ValueError:
        raise FetchRefused("the uploaded image is not valid base64") from None
