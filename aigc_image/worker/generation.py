"""Generation: a batch's images, in engine calls of at most the model's own ``max_batch`` tasks.

Each task keeps its own prompt, seed and image count in the shared call (engines/base.py). While a
call runs, its step watch (worker/leases.py) records progress and stops it when it must:

* out of memory splits the call's tasks in halves and tries each again; a single task that runs
  out fails, and is not retried;
* a lease lost mid-call (another worker took the task over, or its key cancelled it) drops only
  that task (its images are thrown away at delivery); when every task has lost its lease, the
  call stops and nothing is written;
* shutdown's grace running out hands every task of the call back;
* ``worker.task_timeout`` fails the call's tasks;
* any other error settles the call's tasks (worker/outcomes.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from PIL import Image

from aigc_image.catalog import ModelEntry
from aigc_image.clock import Clock
from aigc_image.engines.base import Engine, GenerationRequest
from aigc_image.errors import OutOfMemory, ServiceError
from aigc_image.metrics import BATCH_SIZE, GENERATION
from aigc_image.store.base import TaskStore
from aigc_image.tasks import PANORAMA
from aigc_image.worker.leases import Interrupted, Job, LeaseLost, StepWatch
from aigc_image.worker.outcomes import Outcomes
from aigc_image.worker.reporting import Reporter
from aigc_image.worker.shutdown import Shutdown

log = logging.getLogger(__name__)
Delivered = list[tuple[Job, list[Image.Image]]]  # the tasks that have their images, with them


def request_for(job: Job) -> GenerationRequest:
    """What the engine gets for one task."""
    spec = job.task.spec
    return GenerationRequest(
        prompt=spec.enhanced_prompt or spec.prompt,
        negative_prompt=spec.negative_prompt,
        count=spec.image_count,
        width=spec.width,
        height=spec.height,
        steps=spec.steps,
        guidance_scale=spec.guidance_scale,
        seed=spec.seed,
        images=job.references,
        strength=spec.strength,
        panorama=spec.scene_type == PANORAMA,
        sampler=spec.sampler or None,
        loras=spec.loras,
    )


class Generation:
    def __init__(
        self,
        engine: Engine,
        outcomes: Outcomes,
        reporter: Reporter,
        shutdown: Shutdown,
        store: TaskStore,
        clock: Clock,
        *,
        lease_seconds: float,
        task_timeout: float,
    ) -> None:
        self._engine = engine
        self._outcomes = outcomes
        self._reporter = reporter
        self._shutdown = shutdown
        self._store = store  # the step watch renews leases when their keeper falls behind
        self._clock = clock
        self._lease_seconds = lease_seconds
        self._task_timeout = task_timeout  # worker.task_timeout, 0: none

    def preload(self, entries: Sequence[ModelEntry]) -> None:
        """Load models before the first task. One that cannot load is logged and reported
        (/readyz); the worker serves the others, and tasks for it fail with the reason."""
        for entry in entries:
            started = time.monotonic()
            try:
                self._engine.load(entry)
            except Exception as exc:  # whatever it is, the worker goes on without this model
                if isinstance(exc, ServiceError):  # its message says what to do
                    log.error("preload of %s failed: %s", entry.label, exc)
                else:
                    log.exception("preload of %s failed", entry.label)
                self._reporter.model_failed(entry.label, str(exc) or type(exc).__name__)
                continue
            log.info("preloaded %s in %.1f s", entry.label, time.monotonic() - started)
            self._reporter.model_loaded(entry.label, newly=True)

    def run(self, entry: ModelEntry, jobs: Sequence[Job]) -> Delivered:
        """The images of ``jobs``: one engine call per ``entry.max_batch`` of them."""
        size = max(1, entry.max_batch)
        delivered: Delivered = []
        for start in range(0, len(jobs), size):
            delivered += self._call(entry, list(jobs[start : start + size]))
        return delivered

    def _call(self, entry: ModelEntry, jobs: list[Job]) -> Delivered:
        """One engine call for ``jobs``; out of memory splits them in halves and tries again."""
        if not jobs:
            return []
        watch = StepWatch(self._store, jobs, self._clock, self._shutdown, self._lease_seconds, self._task_timeout)
        started, loaded_before = time.monotonic(), self._engine.loaded()
        try:
            outputs = self._engine.generate(entry, [request_for(job) for job in jobs], watch)
        except OutOfMemory as exc:
            if len(jobs) == 1:
                self._outcomes.failed(jobs, exc)
                return []
            half = len(jobs) // 2
            log.warning("out of memory with a batch of %d; trying halves of %d and %d", len(jobs), half,
                        len(jobs) - half)  # fmt: skip
            return self._call(entry, jobs[:half]) + self._call(entry, jobs[half:])
        except LeaseLost:  # every task of the call was cancelled or taken over
            for job in jobs:
                log.warning("task %s: %s; abandoning this attempt", job.task_id, job.why_lost,
                            extra={"task_id": job.task_id})  # fmt: skip
            return []
        except Interrupted:
            self._outcomes.handed_back(jobs)
            return []
        except Exception as exc:
            self._outcomes.failed(jobs, exc)
            return []
        GENERATION.labels(entry.label).observe(time.monotonic() - started)
        BATCH_SIZE.observe(len(jobs))
        self._reporter.model_loaded(entry.label, newly=entry.label not in loaded_before)  # it loads now
        return list(zip(jobs, outputs, strict=True))
