"""The worker loop in-process: real store, real tiny pipeline, real local storage."""

from __future__ import annotations

import io
import random
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from aigc_image.catalog import ModelEntry, load_catalog
from aigc_image.clock import ManualClock
from aigc_image.engines.base import GenerationRequest, StepCallback
from aigc_image.engines.diffusers_engine import DiffusersEngine
from aigc_image.errors import ModelUnavailable, Reason
from aigc_image.results.buckets import Results
from aigc_image.results.local import LocalStorage
from aigc_image.store import StoreUnavailable, TaskStore
from aigc_image.tasks import Status, TaskSpec, new_task_id
from aigc_image.wiring.worker import WorkerOptions, assemble
from aigc_image.worker.retry import RetryPolicy
from aigc_image.worker.worker import Worker
from tests.helpers import create, get


def spec(model: str = "tiny-random", count: int = 1, output_format: str = "png") -> TaskSpec:
    return TaskSpec(model, "1", "a lighthouse", "", count, output_format, 64, 64, 2, 6.0, "")


class FakeEngine:
    """An engine stand-in for the worker's tests: nothing loaded."""

    def loaded(self) -> list[str]:
        return []


class Broken(FakeEngine):
    def __init__(self, error: Exception) -> None:
        self.error = error

    def generate(
        self, entry: ModelEntry, requests: list[GenerationRequest], on_step: StepCallback
    ) -> list[list[Image.Image]]:
        raise self.error


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "results", "http://127.0.0.1:9", b"k")


def make_worker(
    store: TaskStore, storage: LocalStorage, clock: ManualClock, engine: Any = None, review: Any = None, **options: Any
) -> Worker:
    """A worker over the real store, tiny pipeline and local storage; ``options``: WorkerOptions'."""
    return assemble(
        store, engine or DiffusersEngine("cpu"), load_catalog(default_model="tiny-random"), Results(storage), clock,
        WorkerOptions(**({"lease_seconds": 60, "poll_interval": 0.1} | options)), review=review,
    )  # fmt: skip


@pytest.mark.parametrize(("output_format", "pil_format"), [("png", "PNG"), ("jpeg", "JPEG")])
def test_a_task_runs_to_done_with_decodable_images(
    store: TaskStore, storage: LocalStorage, clock: ManualClock, output_format: str, pil_format: str
) -> None:
    task_id = new_task_id()
    create(store, task_id, "k", spec(count=2, output_format=output_format))
    assert make_worker(store, storage, clock).run_once()
    task = get(store, task_id)
    assert task is not None and task.status is Status.DONE and len(task.result_keys) == 2
    for key in task.result_keys:
        image = Image.open(io.BytesIO((storage.root / key).read_bytes()))
        assert (image.format, image.size) == (pil_format, (64, 64))
    assert not make_worker(store, storage, clock).run_once()  # nothing left


def test_missing_weights_fail_the_task_with_the_engines_advice(
    store: TaskStore, storage: LocalStorage, clock: ManualClock
) -> None:
    task_id = new_task_id()
    create(store, task_id, "k", spec())
    advice = "weights missing: run `hf download x`"
    make_worker(store, storage, clock, Broken(ModelUnavailable(advice))).run_once()
    task = get(store, task_id)
    assert task is not None and (task.status, task.message) == (Status.FAIL, advice)
    assert task.reason is Reason.MODEL_UNAVAILABLE


def test_a_transient_error_is_retried_with_backoff_then_fails_with_the_reason(
    store: TaskStore, storage: LocalStorage, clock: ManualClock
) -> None:
    task_id = new_task_id()
    create(store, task_id, "k", spec())
    retry = RetryPolicy(max_attempts=3, base_delay=10, max_delay=15)
    worker = make_worker(store, storage, clock, Broken(RuntimeError("CUDA out of memory")), retry=retry)
    for attempt, longest_wait in [(1, 10), (2, 15)]:
        assert worker.run_once()
        task = get(store, task_id)
        assert (task.status, task.attempts) == (Status.WAIT, attempt)
        assert task.message == "Image generation failed: RuntimeError: CUDA out of memory"
        clock.advance(longest_wait / 2 - 0.01)  # jitter never goes below half the delay
        assert not worker.run_once(), "retried before its backoff"
        clock.advance(longest_wait / 2 + 0.02)
    assert worker.run_once()  # the third and last attempt
    task = get(store, task_id)
    assert task.status is Status.FAIL
    assert task.message == "Image generation failed: RuntimeError: CUDA out of memory (after 3 attempts)"
    assert task.reason is Reason.INTERNAL  # an error nobody named


def test_the_retry_delay_doubles_is_capped_and_jittered() -> None:
    policy = RetryPolicy(max_attempts=10, base_delay=2, max_delay=20)
    rng = random.Random(3)
    delays = [policy.delay(attempt, rng) for attempt in range(1, 10)]
    for attempt, delay in enumerate(delays, start=1):
        full = min(20, 2 * 2 ** (attempt - 1))
        assert delay is not None and full / 2 <= delay <= full
    assert policy.delay(10) is None
    assert not policy.is_transient(ModelUnavailable("x")) and policy.is_transient(OSError("disk full"))


def test_a_model_removed_from_the_registry_fails_clearly(
    store: TaskStore, storage: LocalStorage, clock: ManualClock
) -> None:
    task_id = new_task_id()
    create(store, task_id, "k", spec(model="Retired"))
    make_worker(store, storage, clock).run_once()
    task = get(store, task_id)
    assert task is not None and task.status is Status.FAIL and "Retired" in task.message
    assert task.reason is Reason.UNKNOWN_MODEL


def test_a_worker_that_lost_its_lease_writes_nothing(
    store: TaskStore, storage: LocalStorage, clock: ManualClock
) -> None:
    task_id = new_task_id()
    create(store, task_id, "k", spec())
    [stale] = store.claim("stalled-worker", 1, lease_seconds=1)
    clock.advance(2)
    [current] = store.claim("new-worker", 1, lease_seconds=60)
    make_worker(store, storage, clock).process([stale])  # the stalled worker wakes up and finishes
    assert list(storage.root.rglob("*.png")) == []  # its images were discarded
    task = get(store, task_id)
    assert task is not None and task.status is Status.RUN
    assert store.complete(task_id, current.token, [])


class Stepping(FakeEngine):
    """A real pipeline call, with time moved (and optionally the lease stolen) between steps."""

    def __init__(self, clock: ManualClock, seconds_per_step: float, steal: TaskStore | None = None) -> None:
        self.clock = clock
        self.seconds_per_step = seconds_per_step
        self.steal = steal
        self.inner = DiffusersEngine("cpu")

    def generate(
        self, entry: ModelEntry, requests: list[GenerationRequest], on_step: StepCallback
    ) -> list[list[Image.Image]]:
        def step(done: int, total: int) -> None:
            self.clock.advance(self.seconds_per_step)
            if self.steal is not None and done == 1:
                assert self.steal.claim("thief", 1, lease_seconds=60)
            on_step(done, total)

        return self.inner.generate(entry, requests, step)


def test_step_heartbeats_keep_a_long_task_leased(store: TaskStore, storage: LocalStorage, clock: ManualClock) -> None:
    task_id = new_task_id()
    create(store, task_id, "k", spec())  # 2 steps, 45 s each: longer than the 60 s lease in total
    make_worker(store, storage, clock, Stepping(clock, 45)).run_once()
    task = get(store, task_id)
    assert task is not None and task.status is Status.DONE and task.attempts == 1


def test_a_lease_lost_mid_pipeline_stops_the_attempt_at_the_next_step(
    store: TaskStore, storage: LocalStorage, clock: ManualClock
) -> None:
    task_id = new_task_id()
    create(store, task_id, "k", spec())
    make_worker(store, storage, clock, Stepping(clock, 61, steal=store)).run_once()
    task = get(store, task_id)
    assert task is not None and task.status is Status.RUN and task.attempts == 2  # the thief's attempt
    assert not storage.root.exists() or list(storage.root.rglob("*.png")) == []


def test_an_output_image_refused_by_the_classifier_is_never_stored(
    store: TaskStore, storage: LocalStorage, clock: ManualClock
) -> None:
    from aigc_image.moderation.review import ContentReview
    from tests.classifiers import refuse_images

    task_id = new_task_id()
    create(store, task_id, "k", spec())
    make_worker(store, storage, clock, review=ContentReview([], refuse_images)).run_once()
    task = get(store, task_id)
    assert task is not None and task.status is Status.FAIL and "refused by content review" in task.message
    assert task.reason is Reason.CONTENT_REFUSED
    assert not storage.root.exists() or list(storage.root.rglob("*.png")) == []


class StopsMidTask(FakeEngine):
    """A real pipeline call during which shutdown is requested and time passes."""

    def __init__(self, worker_clock: ManualClock, seconds_per_step: float) -> None:
        self.clock = worker_clock
        self.seconds_per_step = seconds_per_step
        self.inner = DiffusersEngine("cpu")
        self.worker: Worker | None = None

    def generate(
        self, entry: ModelEntry, requests: list[GenerationRequest], on_step: StepCallback
    ) -> list[list[Image.Image]]:
        def step(done: int, total: int) -> None:
            assert self.worker is not None
            self.worker.request_stop()  # SIGTERM arrives during the image
            self.clock.advance(self.seconds_per_step)
            on_step(done, total)

        return self.inner.generate(entry, requests, step)


def stopped_mid_task(
    store: TaskStore, storage: LocalStorage, clock: ManualClock, seconds_per_step: float, grace: float
) -> Worker:
    """A worker that took one task and was asked to stop while running it."""
    engine = StopsMidTask(clock, seconds_per_step)
    worker = make_worker(store, storage, clock, engine, shutdown_grace=grace)
    engine.worker = worker
    assert worker.run_once()
    return worker


def test_shutdown_lets_the_running_task_finish_within_the_grace_period(
    store: TaskStore, storage: LocalStorage, clock: ManualClock
) -> None:
    task_id, later = new_task_id(), new_task_id()
    create(store, task_id, "k", spec())
    worker = stopped_mid_task(store, storage, clock, seconds_per_step=1, grace=30)
    create(store, later, "k", spec())
    worker.run()  # returns at once: it stopped claiming
    assert get(store, task_id).status is Status.DONE
    assert get(store, later).status is Status.WAIT


def test_shutdown_past_the_grace_period_hands_the_task_back(
    store: TaskStore, storage: LocalStorage, clock: ManualClock
) -> None:
    task_id = new_task_id()
    create(store, task_id, "k", spec())
    stopped_mid_task(store, storage, clock, seconds_per_step=20, grace=10)
    task = get(store, task_id)
    assert task.status is Status.WAIT and task.attempts == 0  # the interrupted attempt is not counted
    assert not storage.root.exists() or list(storage.root.rglob("*.png")) == []
    [claim] = store.claim("next-worker", 1, lease_seconds=60)  # another worker takes it at once
    assert claim.task.attempts == 1


class SlowLoad(FakeEngine):
    """Blocks without reporting any step, as loading a large model does, then returns images."""

    def __init__(self, release: threading.Event) -> None:
        self.release = release
        self.entered = threading.Event()
        self.inner = DiffusersEngine("cpu")

    def generate(
        self, entry: ModelEntry, requests: list[GenerationRequest], on_step: StepCallback
    ) -> list[list[Image.Image]]:
        self.entered.set()
        assert self.release.wait(30)
        return self.inner.generate(entry, requests, on_step)


class Renewals:
    """The real store; each heartbeat notes the (test's) time it began at, so a test can wait for a
    renewal made after it moved time on."""

    def __init__(self, store: TaskStore, clock: ManualClock) -> None:
        self._store = store
        self._clock = clock
        self._renewed = threading.Condition()
        self._latest = float("-inf")

    def heartbeat(self, task_id: str, token: str, lease: float, progress: tuple[int, int] | None = None) -> bool:
        began = self._clock.now()
        renewed = self._store.heartbeat(task_id, token, lease, progress)
        with self._renewed:
            self._latest = max(self._latest, began) if renewed else self._latest
            self._renewed.notify_all()
        return renewed

    def wait_for_renewal_since(self, moment: float) -> None:
        with self._renewed:
            assert self._renewed.wait_for(lambda: self._latest >= moment, timeout=30), "no renewal"

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_a_timer_keeps_the_lease_while_no_step_reports(
    store: TaskStore, storage: LocalStorage, clock: ManualClock
) -> None:
    """Time moves on the test's clock, a third of a lease at a time, each time once the keeper
    renewed after the last move: ten moves, over three leases, and no thief gets the task."""
    task_id = new_task_id()
    create(store, task_id, "k", spec())
    engine = SlowLoad(threading.Event())
    renewals = Renewals(store, clock)
    # A 0.3 s lease: the keeper renews every 0.1 s of real time, at whatever time the test's clock says.
    worker = make_worker(renewals, storage, clock, engine, lease_seconds=0.3)  # type: ignore[arg-type]
    running = threading.Thread(target=worker.run_once)
    running.start()
    try:
        assert engine.entered.wait(60)
        for _ in range(10):
            renewals.wait_for_renewal_since(clock.now())
            clock.advance(0.1)
            assert store.claim("thief", 1, lease_seconds=60) == [], "the lease expired during the load"
    finally:
        engine.release.set()
        running.join(60)
    task = get(store, task_id)
    assert task.status is Status.DONE and task.attempts == 1


class FlakyCompletion:
    """The real store, except that ``complete`` meets a database outage the first ``outages``
    times; with ``committed``, the first of those happens after the commit (the reply was lost)."""

    def __init__(self, store: TaskStore, outages: int, committed: bool) -> None:
        self._store = store
        self.outages = outages
        self.committed = committed
        self.calls = 0

    def complete(self, task_id: str, token: str, result_keys: Sequence[str]) -> bool:
        self.calls += 1
        if self.calls <= self.outages:
            if self.committed and self.calls == 1:
                self._store.complete(task_id, token, result_keys)
            raise StoreUnavailable("PostgreSQL: server closed the connection unexpectedly")
        return self._store.complete(task_id, token, result_keys)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@pytest.mark.parametrize("committed", [False, True], ids=["lost-before-commit", "reply-lost-after-commit"])
def test_a_completion_that_meets_an_outage_is_retried_and_keeps_the_images(
    store: TaskStore, storage: LocalStorage, clock: ManualClock, committed: bool
) -> None:
    task_id = new_task_id()
    create(store, task_id, "k", spec())
    flaky = FlakyCompletion(store, outages=3, committed=committed)
    started = clock.now()
    assert make_worker(flaky, storage, clock).run_once()  # type: ignore[arg-type]
    assert flaky.calls == 4  # three outages, then the store answered
    assert clock.now() - started >= 0.25 + 0.5 + 1.0  # it backed off (on the injected clock)
    task = get(store, task_id)
    assert task is not None and task.status is Status.DONE
    assert [(storage.root / key).exists() for key in task.result_keys] == [True]


def test_a_task_past_the_time_limit_fails_with_a_clear_message_and_is_not_retried(
    store: TaskStore, storage: LocalStorage, clock: ManualClock
) -> None:
    task_id = new_task_id()
    create(store, task_id, "k", spec())  # 2 steps of 45 s each; the limit is 60 s
    make_worker(store, storage, clock, Stepping(clock, 45), task_timeout=60).run_once()
    task = get(store, task_id)
    assert task.status is Status.FAIL and task.attempts == 1
    assert "worker.task_timeout = 60 s" in task.message and "after 2 of 2 steps" in task.message
    assert task.reason is Reason.TIMEOUT


def test_a_newly_loaded_model_and_going_idle_are_reported_at_once(
    store: TaskStore, storage: LocalStorage, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/readyz and the console's operator page learn of them now, not at the next periodic report."""
    from aigc_image.worker import reporting

    monkeypatch.setattr(reporting, "REPORT_INTERVAL", 3600.0)  # only the prompt reports can come in time
    loaded, idle_after = threading.Event(), threading.Event()
    record = store.record_worker

    def record_worker(worker_record: Any) -> None:
        record(worker_record)
        if "tiny-random:1" in worker_record.loaded:
            if loaded.is_set() and worker_record.state == "idle":
                idle_after.set()
            loaded.set()

    monkeypatch.setattr(store, "record_worker", record_worker)
    worker = make_worker(store, storage, clock)
    task_id = new_task_id()
    create(store, task_id, "k", spec())
    running = threading.Thread(target=worker.run)
    running.start()
    try:
        assert loaded.wait(60), "the loaded model was not reported"
        assert idle_after.wait(60), "the worker did not report that it is idle again"
    finally:
        worker.request_stop()
        running.join(60)
    assert get(store, task_id).status is Status.DONE
