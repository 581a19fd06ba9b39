"""The worker loop: claim a batch, fetch its references, generate, deliver; until asked to stop.

Each step is a stage with a module of its own (SGLang's multimodal_gen runtime is the model):

    admission ──▶ references ──▶ generation ──▶ delivery        (each settles what fails in it
    claim, window,  fetched,       engine calls,   review, encode,   through outcomes: FAIL, retry
    model, leases   decoded,       out of memory   store, complete   or hand back, logged, counted)
                    reviewed       halving

while the reporter tells the task store what the worker is doing. A batch whose tasks take
reference images is fetched on the references stage's own threads while the loop goes on with other
work; once fetched, it is generated before anything new is claimed (worker/references.py). A batch's
images are delivered on other threads while the next batch generates (worker/delivery.py), so the
GPU waits neither for downloads nor for PNG encoding or uploads.

A task whose worker died or stalled (a crash in a native library, the kernel's OOM killer) is
taken over alone (admission), after this worker's other batches are fetched, generated and
delivered, and with nothing beside it: a task that kills its worker fails on its own after
``worker.max_attempts``, and the tasks that died with it the first time run again without it.

When the task store is unreachable (a database restart), the worker keeps what it has: heartbeats
that fail are skipped (the lease decides), a task's final write is retried until the store answers
(worker/outcomes.py), and an idle worker tries again with backoff.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from aigc_image.catalog import ModelEntry
from aigc_image.store.base import StoreUnavailable, TaskStore, WorkerRecord
from aigc_image.tasks import Claim
from aigc_image.worker.admission import Admission, Batch
from aigc_image.worker.delivery import MAX_IN_DELIVERY, Delivery
from aigc_image.worker.generation import Generation
from aigc_image.worker.outcomes import Outcomes
from aigc_image.worker.references import References
from aigc_image.worker.reporting import Reporter
from aigc_image.worker.retry import Backoff
from aigc_image.worker.shutdown import Shutdown

log = logging.getLogger(__name__)
FINISH_POLL = 0.1  # seconds between looks at the shutdown grace while fetched batches are awaited


@dataclass(frozen=True)
class Stages:
    """A worker's stages, assembled by the composition root (wiring/worker.py)."""

    admission: Admission
    references: References
    generation: Generation
    delivery: Delivery
    outcomes: Outcomes
    reporter: Reporter


class Worker:
    def __init__(self, store: TaskStore, stages: Stages, shutdown: Shutdown, poll_interval: float) -> None:
        self.store = store
        self.stages = stages
        self.shutdown = shutdown
        self.poll_interval = poll_interval  # seconds an idle worker waits when no wake-up arrives

    @property
    def worker_id(self) -> str:
        return self.stages.reporter.worker_id

    def preload(self, entries: Sequence[ModelEntry]) -> None:
        """Load models before the first task (``worker.preload``, resolved at start)."""
        self.stages.generation.preload(entries)

    def run(self) -> None:
        """Work until ``request_stop``; the batches in hand get ``worker.shutdown_grace`` to finish."""
        log.info("worker %s ready", self.worker_id)
        self.stages.reporter.start()
        backoff = Backoff()
        try:
            while not self.shutdown.requested:
                try:
                    if not self.run_once(overlap=True):
                        self.stages.outcomes.fail_exhausted()
                        self.store.wait_for_work(self.poll_interval)  # a fetched batch ends it too
                    backoff.reset()
                except StoreUnavailable as exc:
                    delay = backoff.next_delay()
                    log.warning("task store unavailable (%s); trying again in %.1f s", exc, delay)
                    self.shutdown.wait(delay)
            self._finish_fetched()
        finally:
            self.shutdown.request()  # also when something unexpected ends the loop: the reporter stops too
            self.stages.references.close()  # hands back what is still being fetched
            self.stages.delivery.wait()
            self.stages.reporter.join()
            with contextlib.suppress(StoreUnavailable):
                self.store.forget_worker(self.worker_id)

    def request_stop(self) -> None:
        """Stop claiming. A batch that outlives the grace period is interrupted at its next step
        and handed back (WAIT), so another worker runs it. Safe from signal handlers."""
        self.shutdown.request()
        self.stages.reporter.soon()

    @property
    def stopping(self) -> bool:
        return self.shutdown.requested

    def record(self) -> WorkerRecord:
        """What this worker is doing now, as /readyz and the operator page show it."""
        return self.stages.reporter.record()

    def run_once(self, overlap: bool = False) -> bool:
        """Generate a batch whose references are fetched, or claim one and process it; False when
        there was nothing to do. With ``overlap`` (the run loop), a batch with references is left
        to fetch meanwhile, and images may still be in delivery when this returns."""
        stages = self.stages
        batch = stages.references.take_ready()
        if batch is not None:
            self.generate(batch, overlap)
            return True
        claims = stages.admission.claim(stages.references.room())
        if claims:
            self.process(claims, overlap)
        return bool(claims)

    def process(self, claims: Sequence[Claim], overlap: bool = False) -> None:
        """Run claimed tasks (one batch key). With ``overlap``, a batch with references goes to be
        fetched and returns at once; any other returns once its images are made, leaving their
        delivery to run meanwhile (not for a task run alone)."""
        stages = self.stages
        batch = stages.admission.admit(claims)
        if batch is None:
            return
        if overlap and not batch.alone and stages.references.needed(batch):
            stages.references.submit(batch)
            return
        try:
            if batch.alone:  # a task that may kill its worker runs with nothing else in it
                self._finish_fetched(within_grace=False)
                stages.delivery.wait()
            ready = stages.references.prepare(batch)
        except BaseException:
            batch.keeper.stop()
            raise
        if ready is not None:
            self.generate(ready, overlap)

    def generate(self, batch: Batch, overlap: bool = False) -> None:
        """Make a batch's images (its references ready) and deliver them: meanwhile with ``overlap``
        (not for a task run alone)."""
        stages = self.stages
        try:
            with stages.reporter.generating(batch.task_ids):
                delivered = stages.generation.run(batch.entry, batch.jobs)
                stages.delivery.wait(leave=MAX_IN_DELIVERY - 1)
                stages.reporter.delivering([job.task_id for job, _ in delivered])
        except BaseException:
            batch.keeper.stop()
            raise
        stages.delivery.submit(delivered, batch.keeper)
        if not overlap or batch.alone:
            stages.delivery.wait()

    def _finish_fetched(self, within_grace: bool = True) -> None:
        """Generate every batch the references stage holds, as each is fetched. ``within_grace``
        (stopping): only while shutdown's grace lasts; what is left is handed back by ``close``."""
        references = self.stages.references
        while not (within_grace and self.shutdown.past_grace()):
            batch = references.take_ready()
            if batch is not None:
                self.generate(batch, overlap=True)
            elif references.busy:
                references.wait_ready(FINISH_POLL)
            else:
                return
