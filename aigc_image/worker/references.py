"""References: each task's reference images (``ImageInfos``), fetched safely (fetch/), decoded
with a pixel cap and reviewed, before the task holds the device.

A batch whose tasks take reference images goes to this stage's own threads (``submit``; at most
``fetch.workers`` tasks at once, ``fetch.per_key`` of one key: the claim leaves no more room,
``room``) while the worker goes on generating other work; its leases are kept meanwhile by its
LeaseKeeper. Once every task of it is settled, the tasks whose images are ready join a queue that
the worker takes from before it claims anything new (``take_ready``), and its wait for work is cut
short (``wake``). So a slow or hostile image server delays only its own key's tasks, and the
device never waits for a download while other work is ready.

Each task fetches its own: a reference that cannot be fetched, decoded or used fails (or retries)
only its task, and the batch goes on with the others. A fetch that fails for a reason that may pass
(a timeout, HTTP 5xx) is retried behind the work queued meanwhile (worker/outcomes.py); the time a
task spends fetching is counted over its attempts, and past ``fetch.max_total_seconds`` it fails
(``FetchTimeSpent``, reason ``reference_unreachable``). A task cancelled (its lease lost) while it
fetches is dropped when its fetch ends. When the worker stops, fetches in progress are cut off and
their tasks handed back (``close``).

A batch run alone (its last attempt never ended) and a caller that waits for its batch
(``Worker.process`` without overlap) prepare references on their own thread instead (``prepare``).
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from PIL import Image

from aigc_image.fetch.fetcher import Abort, Fetcher, FetchFailed, FetchRefused
from aigc_image.fetch.images import decode_reference
from aigc_image.store.fairness import FetchRoom
from aigc_image.worker.admission import Batch
from aigc_image.worker.leases import Job
from aigc_image.worker.outcomes import Outcomes
from aigc_image.worker.reporting import Reporter
from aigc_image.worker.screening import ImageScreen

log = logging.getLogger(__name__)


class FetchTimeSpent(FetchFailed):
    """A task's reference images took ``fetch.max_total_seconds`` over its attempts: no more tries."""

    permanent = True


@dataclass
class _InFetch:
    """A batch whose references are being fetched: how many of its jobs are still fetching, and
    which have their images."""

    batch: Batch
    left: int
    ready: set[str] = field(default_factory=set)  # task ids


class References:
    def __init__(
        self,
        fetcher: Fetcher | None,
        screen: ImageScreen,
        outcomes: Outcomes,
        reporter: Reporter,
        wake: Callable[[], None],
        *,
        max_pixels: int,
        workers: int,
        per_key: int,
        max_total_seconds: float,
    ) -> None:
        self._fetcher = fetcher  # None: this worker fetches no URLs (uploaded images still work)
        self._screen = screen
        self._outcomes = outcomes
        self._reporter = reporter
        self._wake = wake  # ends the worker's wait for work: a batch is ready
        self._max_pixels = max_pixels  # fetch.max_pixels
        self._workers = workers  # fetch.workers
        self._per_key = per_key  # fetch.per_key
        self._max_total = max_total_seconds  # fetch.max_total_seconds
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="fetch")
        self._abort = Abort()
        self._lock = threading.Condition()
        self._fetching: Counter[str] = Counter()  # tasks in fetch, by key
        self._in_fetch: list[_InFetch] = []
        self._ready: deque[Batch] = deque()
        self._settling = 0  # batches done fetching, on their way to the ready queue
        self._closed = False

    # -- the worker's side -------------------------------------------------------------------------

    @staticmethod
    def needed(batch: Batch) -> bool:
        """Whether ``batch``'s tasks take reference images (a batch's tasks all do, or none)."""
        return any(job.task.spec.reference_urls for job in batch.jobs)

    def room(self) -> FetchRoom:
        """How many more tasks with reference images this worker may claim, in all and by key."""
        with self._lock:
            return FetchRoom(self._workers, self._per_key, dict(self._fetching))

    @property
    def busy(self) -> bool:
        """Whether a batch is being fetched or waits to generate."""
        with self._lock:
            return bool(self._in_fetch or self._settling or self._ready)

    def submit(self, batch: Batch) -> None:
        """Fetch ``batch``'s references on this stage's threads; it joins the ready queue once done."""
        pending = _InFetch(batch, left=len(batch.jobs))
        with self._lock:
            self._in_fetch.append(pending)
            self._fetching.update(job.task.secret_id for job in batch.jobs)
        self._reporter.fetching(batch.task_ids)
        for job in batch.jobs:
            self._pool.submit(self._fetch, pending, job)

    def take_ready(self) -> Batch | None:
        """The first batch whose references are ready, or None."""
        with self._lock:
            return self._ready.popleft() if self._ready else None

    def wait_ready(self, timeout: float) -> None:
        """Until a batch is ready, none is being fetched, or ``timeout`` seconds pass."""
        with self._lock:
            self._lock.wait_for(lambda: bool(self._ready) or not (self._in_fetch or self._settling), timeout)

    def prepare(self, batch: Batch) -> Batch | None:
        """``batch`` with its references ready, on the calling thread; the tasks that cannot have
        them are settled (None: none is left, and its leases are no longer kept)."""
        self._reporter.fetching(batch.task_ids)
        try:
            ready = [job for job in batch.jobs if self._prepare(job)]
        finally:
            self._reporter.fetched(batch.task_ids)
        return self._ready_part(batch, ready)

    def close(self) -> None:
        """The worker stops: cut off the fetches in progress and hand back every task this stage
        holds, fetched or not (another worker runs them; the attempt is not counted)."""
        with self._lock:
            self._closed = True
            held = [pending.batch for pending in self._in_fetch] + list(self._ready)
            self._in_fetch.clear()
            self._ready.clear()
            self._lock.notify_all()
        self._abort.set()
        for batch in held:
            self._outcomes.handed_back([job for job in batch.jobs if not job.lost.is_set()])
            batch.keeper.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- this stage's threads ------------------------------------------------------------------------

    def _fetch(self, pending: _InFetch, job: Job) -> None:
        try:
            ready = self._prepare(job)
        except BaseException:  # settling it failed (the store refused the write): the accounting below must run
            log.exception("task %s: its fetch could not be settled; its lease will run out and it is taken over",
                          job.task_id, extra={"task_id": job.task_id})  # fmt: skip
            ready = False
        with self._lock:
            self._fetching[job.task.secret_id] -= 1
            self._fetching += Counter()  # drops keys at zero
            if ready:
                pending.ready.add(job.task_id)
            pending.left -= 1
            done = pending.left == 0 and not self._closed
            if done:
                self._in_fetch.remove(pending)
                self._settling += 1  # still busy until it is in the ready queue
        self._reporter.fetched([job.task_id])
        if not done:
            return
        batch = self._ready_part(pending.batch, [job for job in pending.batch.jobs if job.task_id in pending.ready])
        with self._lock:
            self._settling -= 1
            closed = self._closed  # close ran meanwhile, and could not see this batch
            if batch is not None and not closed:
                self._ready.append(batch)
            self._lock.notify_all()
        if batch is not None and closed:
            self._outcomes.handed_back(batch.jobs)
            batch.keeper.stop()
        self._wake()

    def _prepare(self, job: Job) -> bool:
        """Fetch, decode and review one task's references into ``job.references``; whether it has
        them (if not, its attempt is settled, unless its lease is gone or the worker stops)."""
        try:
            job.references = self.images(job)
        except Exception as exc:  # every one, named or not, ends this attempt of this task only
            if self._closed:
                return False  # handed back by close
            if job.lost.is_set():
                log.warning("task %s: %s while fetching its reference images; abandoning this attempt",
                            job.task_id, job.why_lost, extra={"task_id": job.task_id})  # fmt: skip
                return False
            self._outcomes.failed([job], exc)
            return False
        return True

    def images(self, job: Job) -> tuple[Image.Image, ...]:
        """The task's reference images, fetched, decoded and reviewed; ``job.fetch_seconds`` counts
        the time its fetches took in this attempt."""
        images = []
        for index, url in enumerate(job.task.spec.reference_urls):
            if job.lost.is_set():
                raise FetchFailed("the task's lease was lost")
            try:
                data = uploaded(url) if url.startswith("data:") else self._download(job, url)
                image = decode_reference(data, self._max_pixels)
            except (FetchRefused, FetchFailed) as exc:  # FetchTimeSpent among them, keeping its type
                raise type(exc)(f"ImageInfos.{index}: {exc}") from None
            self._screen.check(f"reference image {index}", "reference_image", image)
            images.append(image)
        return tuple(images)

    def _download(self, job: Job, url: str) -> bytes:
        """One reference's bytes, within what is left of the task's fetch time."""
        if self._fetcher is None:
            raise FetchRefused("this worker does not fetch reference images")
        if self._max_total - self._spent(job) <= 0:
            raise self._time_spent(job, "no time is left to fetch it")
        started = time.monotonic()
        try:
            return self._fetcher.fetch(url, timeout=self._max_total - self._spent(job), abort=self._abort)
        except FetchFailed as exc:
            job.fetch_seconds += time.monotonic() - started
            started = time.monotonic()
            if self._spent(job) >= self._max_total and not self._abort.is_set():
                raise self._time_spent(job, str(exc)) from None
            raise
        finally:
            job.fetch_seconds += time.monotonic() - started

    @staticmethod
    def _spent(job: Job) -> float:
        """Seconds the task has spent fetching, over its attempts and in this one so far."""
        return job.task.fetch_seconds + job.fetch_seconds

    def _time_spent(self, job: Job, why: str) -> FetchTimeSpent:
        return FetchTimeSpent(
            f"{why}; the task's reference images took {self._spent(job):.1f} s to fetch over {job.task.attempts} "
            f"attempt(s), the most this server allows (fetch.max_total_seconds = {self._max_total:g} s)"
        )

    def _ready_part(self, batch: Batch, ready: Sequence[Job]) -> Batch | None:
        """``batch`` with only ``ready`` jobs whose leases it still holds; None (its leases no
        longer kept) when there are none."""
        jobs = [job for job in ready if not job.lost.is_set()]
        for job in ready:
            if job.lost.is_set():
                log.warning("task %s: %s while fetching its reference images; abandoning this attempt",
                            job.task_id, job.why_lost, extra={"task_id": job.task_id})  # fmt: skip
        if not jobs:
            batch.keeper.stop()
            return None
        return replace(batch, jobs=jobs)


def uploaded(url: str) -> bytes:
    """The bytes of a reference image sent with its request, as a base64 data: URL."""
    try:
        return base64.b64decode(url.partition(",")[2], validate=True)
    except ValueError:
        raise FetchRefused("the uploaded image is not valid base64") from None
