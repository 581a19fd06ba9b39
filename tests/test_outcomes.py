"""How an attempt ends is logged and counted (worker/outcomes.py), and nothing a worker meets while
preparing a batch or loading a model ends the worker: real store, real worker stages; engines and
a fetcher that fail on purpose where a failure must be provoked."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from aigc_image.catalog import ModelEntry, load_catalog
from aigc_image.clock import ManualClock
from aigc_image.errors import ModelUnavailable, Reason
from aigc_image.results.buckets import Results
from aigc_image.results.local import LocalStorage
from aigc_image.results.s3 import StorageRefused
from aigc_image.store import TaskStore
from aigc_image.store.base import WorkerState
from aigc_image.tasks import Status, TaskSpec, new_task_id
from aigc_image.wiring.worker import WorkerOptions, assemble
from aigc_image.worker.retry import RetryPolicy
from aigc_image.worker.worker import Worker
from tests.helpers import create, get
from tests.stores import Backend

OUTCOMES = "aigc_image.worker.outcomes"


def spec(model: str = "tiny-random", references: tuple[str, ...] = ()) -> TaskSpec:
    return TaskSpec(model, "1", "a lighthouse", "", 1, "png", 64, 64, 2, 6.0, seed=1, reference_urls=references)


def failures(reason: Reason) -> float:
    return REGISTRY.get_sample_value("aigc_image_tasks_failed_total", {"reason": reason}) or 0.0


class Engine:
    """Generates nothing: it fails with ``error``; loads fail with ``load_errors`` by label."""

    device = "cpu"

    def __init__(self, error: Exception | None = None, load_errors: dict[str, Exception] | None = None) -> None:
        self.error = error or RuntimeError("not reached")
        self.load_errors = load_errors or {}
        self.models: list[str] = []

    def generate(self, entry: ModelEntry, requests: Any, on_step: Any) -> Any:
        raise self.error

    def load(self, entry: ModelEntry) -> None:
        if entry.label in self.load_errors:
            raise self.load_errors[entry.label]
        self.models.append(entry.label)

    def loaded(self) -> list[str]:
        return list(self.models)


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "results", "http://127.0.0.1:9", b"k")


def make_worker(store: TaskStore, storage: Any, clock: ManualClock, engine: Any, **options: Any) -> Worker:
    fetcher = options.pop("fetcher", None)
    results = storage if isinstance(storage, Results) else Results(storage)
    return assemble(
        store, engine, load_catalog(default_model="tiny-random"), results, clock,
        WorkerOptions(**({"lease_seconds": 60, "retry": RetryPolicy(2, 10, 10)} | options)), fetcher=fetcher,
    )  # fmt: skip


def task_lines(caplog: pytest.LogCaptureFixture, task_id: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == OUTCOMES and task_id in r.getMessage()]


def test_a_fail_is_logged_with_its_reason_attempts_and_message_and_counted_by_reason(
    store: TaskStore, storage: LocalStorage, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    task_id = new_task_id()
    create(store, task_id, "k", spec(model="Retired"))
    before = failures(Reason.UNKNOWN_MODEL)
    make_worker(store, storage, clock, Engine()).run_once()
    [line] = task_lines(caplog, task_id)
    assert line.levelno == logging.WARNING and line.exc_info is None  # a named error: its message says it all
    assert f"task {task_id}: FAIL (unknown_model) on attempt 1: ModelName 'Retired'" in line.getMessage()
    assert failures(Reason.UNKNOWN_MODEL) == before + 1


def test_an_error_nobody_named_is_retried_then_failed_with_its_traceback_logged_each_time(
    store: TaskStore, storage: LocalStorage, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    task_id = new_task_id()
    create(store, task_id, "k", spec())
    worker = make_worker(store, storage, clock, Engine(KeyError("latents")))
    before = failures(Reason.INTERNAL)
    assert worker.run_once()
    clock.advance(10)
    assert worker.run_once()
    retried, failed = task_lines(caplog, task_id)
    assert "attempt 1 failed (internal); retrying in" in retried.getMessage()
    assert "FAIL (internal) on attempt 2: Image generation failed: KeyError: 'latents' (after 2 attempts)" in (
        failed.getMessage()
    )
    assert all(line.exc_info and line.exc_info[0] is KeyError for line in (retried, failed))
    assert get(store, task_id).reason is Reason.INTERNAL and failures(Reason.INTERNAL) == before + 1


def test_one_error_that_ends_a_batch_logs_its_traceback_once(
    store: TaskStore, storage: LocalStorage, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    ids = [new_task_id() for _ in range(3)]
    for task_id in ids:
        create(store, task_id, "k", spec())
        clock.advance(0.001)
    make_worker(store, storage, clock, Engine(KeyError("latents")), max_batch=3).run_once()
    lines = [line for task_id in ids for line in task_lines(caplog, task_id)]
    assert len(lines) == 3 and sum(1 for line in lines if line.exc_info) == 1


class BrokenFetcher:
    """A fetcher with a bug: what a task's preparation may meet that nobody named."""

    def fetch(self, url: str, timeout: float | None = None, abort: object = None) -> bytes:
        raise AttributeError("'NoneType' object has no attribute 'getaddrinfo'")


def test_an_unexpected_error_while_preparing_a_task_is_retried_with_its_traceback(
    store: TaskStore, storage: LocalStorage, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    task_id = new_task_id()
    create(store, task_id, "k", spec(references=("https://images.example/a.png",)))
    assert make_worker(store, storage, clock, Engine(), fetcher=BrokenFetcher()).run_once()
    task = get(store, task_id)
    assert (task.status, task.attempts) == (Status.WAIT, 1)
    [line] = task_lines(caplog, task_id)
    assert "retrying in" in line.getMessage() and line.exc_info and line.exc_info[0] is AttributeError


def test_tasks_whose_worker_stopped_responding_every_time_are_failed_and_counted(
    backend: Backend, storage: LocalStorage, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = backend.open(clock, max_attempts=1)
    create(store, new_task_id(), "k", spec())
    assert store.claim("dead-worker", 1, lease_seconds=10)
    clock.advance(11)
    before = failures(Reason.WORKER_LOST)
    make_worker(store, storage, clock, Engine()).stages.outcomes.fail_exhausted()
    assert failures(Reason.WORKER_LOST) == before + 1
    assert any("1 task(s) failed (worker_lost)" in r.getMessage() for r in caplog.records)
    store.close()


class RefusingResults(Results):
    def __init__(self, storage: LocalStorage, error: Exception) -> None:
        super().__init__(storage)
        self.error = error

    def put(self, location: str, data: bytes) -> None:
        raise self.error


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (StorageRefused("AccessDenied: the bucket refused the object"), Reason.STORAGE_REFUSED),
        (OSError(28, "No space left on device"), Reason.STORAGE_FAILED),
    ],
    ids=["refused", "failed"],
)
def test_a_refusal_to_store_keeps_its_own_reason(
    backend: Backend, storage: LocalStorage, clock: ManualClock, error: Exception, reason: Reason
) -> None:
    from aigc_image.engines.diffusers_engine import DiffusersEngine

    store = backend.open(clock)
    task_id = new_task_id()
    create(store, task_id, "k", spec())
    worker = make_worker(store, RefusingResults(storage, error), clock, DiffusersEngine("cpu"), retry=RetryPolicy(1))
    worker.run_once()
    task = get(store, task_id)
    assert (task.status, task.reason) == (Status.FAIL, reason)
    assert task.message.startswith("Storing the images failed:")
    store.close()


def test_a_model_that_fails_to_preload_in_any_way_is_reported_and_the_worker_goes_on(
    store: TaskStore, storage: LocalStorage, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    catalog = load_catalog(default_model="tiny-random")
    entries = [catalog.resolve(name, None) for name in ("Hunyuan", "Qwen", "tiny-random")]
    engine = Engine(load_errors={
        entries[0].label: ModelUnavailable("weights missing: run `aigc-image pull Hunyuan`"),
        entries[1].label: RuntimeError("CUDA error: an illegal memory access was encountered"),
    })  # fmt: skip
    worker = make_worker(store, storage, clock, engine)
    worker.preload(entries)
    assert worker.record().failed == {
        entries[0].label: "weights missing: run `aigc-image pull Hunyuan`",
        entries[1].label: "CUDA error: an illegal memory access was encountered",
    }
    assert worker.record().loaded == ["tiny-random:1"]
    lines = {r.getMessage(): r for r in caplog.records if r.getMessage().startswith("preload of")}
    assert (
        lines[f"preload of {entries[0].label} failed: weights missing: run `aigc-image pull Hunyuan`"].exc_info is None
    )
    unexpected = lines[f"preload of {entries[1].label} failed"]
    assert unexpected.exc_info and unexpected.exc_info[0] is RuntimeError  # its traceback


def test_a_stopping_worker_says_so(store: TaskStore, storage: LocalStorage, clock: ManualClock) -> None:
    worker = make_worker(store, storage, clock, Engine())
    assert worker.record().state is WorkerState.IDLE
    worker.request_stop()
    worker.run()  # reports, sees the stop, reports once more and forgets itself
    assert worker.record().state is WorkerState.STOPPING
    assert [w.worker_id for w in store.workers()] == []
