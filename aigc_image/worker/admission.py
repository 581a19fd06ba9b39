"""Admission: claiming the next batch of tasks, and making it ready to generate.

A worker claims up to ``worker.max_batch`` waiting tasks that can share one pipeline call (the same
batch key: model, size, steps, guidance, kind; tasks.py), in the store's order. Tasks with reference
images only as far as the references stage has room to fetch them (``FetchRoom``: in all, and per
key), and one key's in a batch. With ``worker.batch_wait_ms`` a part-filled batch waits that long
for more tasks that fit it. A task whose last attempt never ended (its worker died or stalled,
maybe because of this very task) is claimed alone (``Claim.alone``) and never waits for company.

Admitting claimed tasks makes them a ``Batch``: one ``Job`` each, their model resolved once for
all (a model no longer in the catalogue fails them all), and their leases kept from then on
(worker/leases.py) until their images are stored.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from aigc_image.catalog import Catalog, ModelEntry
from aigc_image.clock import Clock
from aigc_image.errors import TaskError
from aigc_image.metrics import QUEUE_WAIT, weight_label
from aigc_image.store.base import TaskStore
from aigc_image.store.fairness import FetchRoom
from aigc_image.tasks import Claim, has_references
from aigc_image.worker.leases import Job, LeaseKeeper
from aigc_image.worker.outcomes import Outcomes
from aigc_image.worker.reporting import Reporter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Batch:
    """Claimed tasks of one batch key, their model resolved and their leases kept."""

    jobs: list[Job]
    entry: ModelEntry
    keeper: LeaseKeeper  # stopped once their images are stored, or when the batch ends early
    alone: bool  # a task taken over from a worker that died or stalled: nothing runs beside it

    @property
    def task_ids(self) -> list[str]:
        return [job.task_id for job in self.jobs]


class Admission:
    def __init__(
        self,
        store: TaskStore,
        clock: Clock,
        catalog: Catalog,
        outcomes: Outcomes,
        reporter: Reporter,
        worker_id: str,
        *,
        lease_seconds: float,
        max_batch: int,
        batch_wait: float,
    ) -> None:
        self._store = store
        self._clock = clock
        self._catalog = catalog
        self._outcomes = outcomes
        self._reporter = reporter  # the models this worker has loaded, and since when (affinity)
        self._worker_id = worker_id
        self._lease_seconds = lease_seconds
        self._max_batch = max(1, max_batch)
        self._batch_wait = batch_wait  # seconds (worker.batch_wait_ms)

    def claim(self, fetch: FetchRoom) -> list[Claim]:
        """The next batch's tasks, leased to this worker; none when none is waiting. ``fetch``: the
        room this worker has to fetch reference images."""
        loaded, loaded_since = self._reporter.loaded_models()
        claims = self._store.claim(
            self._worker_id, self._max_batch, self._lease_seconds, loaded=loaded, loaded_since=loaded_since,
            fetch=fetch,
        )  # fmt: skip
        if claims and not claims[0].alone and len(claims) < self._max_batch and self._batch_wait > 0:
            claims += self._more(claims, fetch)
        return claims

    def _more(self, claims: list[Claim], fetch: FetchRoom) -> list[Claim]:
        """More tasks of ``claims``' batch key, up to ``worker.max_batch`` with them, waiting at most
        ``batch_wait`` for them."""
        batch_key = claims[0].task.spec.batch_key
        more: list[Claim] = []
        deadline = self._clock.monotonic() + self._batch_wait
        while True:  # claim first: tasks created before the wait began have already sent their wake-up
            room, batch_fetch = self._room(claims + more, fetch)
            if room > 0:
                more += self._store.claim(
                    self._worker_id, room, self._lease_seconds, batch_key=batch_key, fetch=batch_fetch
                )  # fmt: skip
            left = deadline - self._clock.monotonic()
            if self._room(claims + more, fetch)[0] <= 0 or left <= 0:
                return more
            self._store.wait_for_work(left)

    def _room(self, batch: list[Claim], fetch: FetchRoom) -> tuple[int, FetchRoom]:
        """How many more tasks ``batch`` may take, and the room to fetch references they are claimed
        with: a batch with references takes only its key's tasks, as far as there is room."""
        room = self._max_batch - len(batch)
        first = batch[0].task
        if not has_references(first.spec.batch_key):
            return room, fetch
        fetch = fetch.for_batch(first.secret_id, len(batch))
        return min(room, fetch.room(first.secret_id)), fetch

    def admit(self, claims: Sequence[Claim]) -> Batch | None:
        """Claimed tasks (one batch key) as a batch, their leases kept from now; None when their
        model cannot be resolved (they are failed)."""
        jobs = [Job(claim) for claim in claims]
        spec = jobs[0].task.spec  # a batch shares its model, size, steps and kind
        for job in jobs:
            if job.task.attempts == 1:
                wait = max(0.0, self._clock.now() - job.task.created_at)
                QUEUE_WAIT.labels(weight_label(job.claim.weight)).observe(wait)
            log.info("task %s: attempt %d on %s:%s%s", job.task_id, job.task.attempts, spec.model_name,
                     spec.model_version, ", alone: its last attempt never ended" if job.claim.alone else "",
                     extra={"task_id": job.task_id})  # fmt: skip
        try:
            entry = self._catalog.resolve(spec.model_name, spec.model_version)
        except TaskError as exc:
            self._outcomes.failed(jobs, exc)
            return None
        keeper = LeaseKeeper(self._store, jobs, self._lease_seconds, self._clock)
        keeper.start()
        return Batch(jobs, entry, keeper, alone=claims[0].alone)
