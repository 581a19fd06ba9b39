"""Reference images fetched out of the generation loop (worker/references.py), in-process: the real
store on SQLite and PostgreSQL, the real tiny pipeline, and image servers that are real sockets on
loopback, the slow one sending a byte a second. The live service is tested in
test_slow_references.py.
"""

from __future__ import annotations

import asyncio
import logging
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aigc_image.catalog import load_catalog
from aigc_image.clock import ManualClock
from aigc_image.config import SchedulingPolicy, load_settings
from aigc_image.engines.diffusers_engine import DiffusersEngine
from aigc_image.errors import Reason
from aigc_image.fetch.fetcher import Fetcher
from aigc_image.results.buckets import Results
from aigc_image.results.local import LocalStorage
from aigc_image.store import Scheduling, TaskStore, open_store
from aigc_image.store.fairness import FetchRoom, Head, Tenant, fill
from aigc_image.tasks import NewTask, Status, TaskSpec, new_task_id
from aigc_image.wiring.worker import WorkerOptions, assemble
from aigc_image.worker.retry import RetryPolicy
from aigc_image.worker.worker import Worker
from tests.helpers import get, wait_for
from tests.loopback import ImageServer, SlowServer, http_server, png
from tests.stores import Backend

LOOPBACK = load_settings(environ={"AIGC_IMAGE_FETCH_ALLOW_NETWORKS": "127.0.0.1/32"}).fetch.allow_networks
FETCH_TIMEOUT = 10.0  # seconds: far longer than a tiny task, far shorter than the slow server's image


def spec(references: tuple[str, ...] = (), prompt: str = "a lighthouse") -> TaskSpec:
    return TaskSpec("tiny-random", "1", prompt, "", 1, "png", 64, 64, 2, 6.0, seed=1, reference_urls=references)


def add(store: TaskStore, clock: ManualClock, key: str, references: tuple[str, ...] = (), count: int = 1) -> list[str]:
    """``count`` tasks of ``key``, a millisecond apart."""
    ids = []
    for index in range(count):
        ids.append(new_task_id())
        asyncio.run(store.create(NewTask(ids[-1], key, spec(references, prompt=str(index)))))
        clock.advance(0.001)
    return ids


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "results", "http://127.0.0.1:9", b"k")


@pytest.fixture
def fast_images() -> Iterator[ImageServer]:
    server = ImageServer()
    with http_server(server.handler()) as base:
        server.port = int(base.rsplit(":", 1)[1])
        yield server


def make_worker(store: TaskStore, storage: LocalStorage, clock: ManualClock, **options: Any) -> Worker:
    """A worker over the real store, tiny pipeline and local storage, fetching from loopback."""
    fetcher = Fetcher(LOOPBACK, timeout=options.pop("fetch_timeout", FETCH_TIMEOUT))
    defaults = {"lease_seconds": 60, "poll_interval": 0.1, "shutdown_grace": 0.0}
    return assemble(
        store, DiffusersEngine("cpu"), load_catalog(default_model="tiny-random"), Results(storage), clock,
        WorkerOptions(**(defaults | options)), fetcher=fetcher,
    )  # fmt: skip


def start(worker: Worker) -> threading.Thread:
    thread = threading.Thread(target=worker.run, name="worker-under-test", daemon=True)
    thread.start()
    return thread


def status(store: TaskStore, task_id: str) -> Status:
    return get(store, task_id).status  # type: ignore[no-any-return]


def warm_up(store: TaskStore, clock: ManualClock) -> None:
    """One plain task done first: the tiny pipeline loads once, before the timing that matters."""
    [task_id] = add(store, clock, "warm-up")
    wait_for(lambda: status(store, task_id) is Status.DONE, timeout=120)


# -- the case: another key's task behind slow reference images ------------------------------


@pytest.mark.parametrize("max_batch", [1, 8])
def test_another_keys_task_is_done_while_three_slow_references_are_fetched(
    store: TaskStore, storage: LocalStorage, clock: ManualClock, fast_images: ImageServer, max_batch: int
) -> None:
    """Three tasks of key A whose image server sends a byte a second, then a plain task of key B
    and one with a reference on a fast server: both of B's are done while A's three are still
    being fetched, on one worker. Stopping hands A's tasks back, their attempt not counted."""
    with SlowServer(png()) as slow:
        worker = make_worker(store, storage, clock, max_batch=max_batch)
        thread = start(worker)
        try:
            warm_up(store, clock)
            slow_tasks = add(store, clock, "A", (slow.url("a.png"),), count=3)
            assert slow.wait_for(lambda server: server.open == 3), "A's three fetches did not start"
            [plain] = add(store, clock, "B")
            [referenced] = add(store, clock, "B", (fast_images.add("b.png", (64, 64), (10, 200, 30)),))
            wait_for(lambda: status(store, plain) is Status.DONE and status(store, referenced) is Status.DONE)
            assert slow.open == 3 and slow.closed_at == [], "A's fetches ended before B's tasks were done"
            assert [status(store, task_id) for task_id in slow_tasks] == [Status.RUN] * 3
        finally:
            worker.request_stop()
            thread.join(60)
        assert not thread.is_alive()
        for task_id in slow_tasks:  # handed back when the worker stopped: another worker runs them
            task = get(store, task_id)
            assert (task.status, task.attempts) == (Status.WAIT, 0)
        assert slow.wait_for(lambda server: server.open == 0), "the fetches were not cut off at the stop"


def test_a_keys_slow_server_holds_at_most_per_key_fetches_and_not_another_keys_references(
    store: TaskStore, storage: LocalStorage, clock: ManualClock, fast_images: ImageServer
) -> None:
    """Key A has six tasks on a slow server, fetch.per_key 2 of fetch.workers 3: two of A's are
    fetched at a time, the others wait unclaimed, and key B's task with a reference on a fast
    server is fetched and done meanwhile."""
    with SlowServer(png()) as slow:
        worker = make_worker(store, storage, clock, max_batch=8, fetch_workers=3, fetch_per_key=2)
        thread = start(worker)
        try:
            warm_up(store, clock)
            slow_tasks = add(store, clock, "A", (slow.url("a.png"),), count=6)
            assert slow.wait_for(lambda server: server.open == 2)
            [task_id] = add(store, clock, "B", (fast_images.add("b.png", (64, 64), (1, 2, 3)),))
            wait_for(lambda: status(store, task_id) is Status.DONE)
            assert slow.open == 2 and slow.requests == 2 and slow.closed_at == []
            assert sorted(status(store, task) for task in slow_tasks) == [Status.RUN] * 2 + [Status.WAIT] * 4
        finally:
            worker.request_stop()
            thread.join(60)


# -- a fetch that timed out: retried behind, its fetch time bounded --------------------------------


def test_a_timed_out_fetch_is_retried_behind_and_its_fetch_time_over_attempts_is_bounded(
    store: TaskStore, storage: LocalStorage, clock: ManualClock
) -> None:
    """fetch.timeout 1 s, fetch.max_total_seconds 1.5 s: the first attempt is cut off after 1 s and
    retried, queued again at its retry time; the second gets the 0.5 s left, and the task fails
    with reason reference_unreachable, naming the setting."""
    with SlowServer(png()) as slow:
        worker = make_worker(
            store, storage, clock, fetch_timeout=1.0, fetch_max_total=1.5, retry=RetryPolicy(3, 4.0, 4.0)
        )
        [task_id] = add(store, clock, "A", (slow.url("a.png"),))
        created = get(store, task_id).created_at
        assert worker.run_once()
        task = get(store, task_id)
        assert (task.status, task.attempts) == (Status.WAIT, 1)
        assert "took longer than 1 s" in task.message
        assert 1.0 <= task.fetch_seconds < 1.5
        assert task.queued_at >= created + 2.0  # its retry time (at least half the 4 s delay), not its creation
        clock.advance(4.0)
        assert worker.run_once()
        task = get(store, task_id)
        assert (task.status, task.reason, task.attempts) == (Status.FAIL, Reason.REFERENCE_UNREACHABLE, 2)
        assert "fetch.max_total_seconds = 1.5 s" in task.message and "ImageInfos.0" in task.message
        assert 1.5 <= task.fetch_seconds < 2.0  # both attempts, recorded with the failure
        assert slow.requests == 2


def test_a_task_cancelled_while_its_references_are_fetched_is_dropped(
    store: TaskStore, storage: LocalStorage, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    with SlowServer(png()) as slow:
        worker = make_worker(store, storage, clock, fetch_timeout=2.0)
        thread = start(worker)
        try:
            [task_id] = add(store, clock, "A", (slow.url("a.png"),))
            assert slow.wait_for(lambda server: server.open == 1)
            before, after = asyncio.run(store.cancel(task_id, "A", "Cancelled by its key."))
            assert before is not None and after is not None and after.reason is Reason.CANCELLED
            with caplog.at_level(logging.WARNING, "aigc_image.worker.references"):
                wait_for(lambda: not worker.stages.references.busy and slow.open == 0)
            assert worker.stages.references.room().fetching == {}
        finally:
            worker.request_stop()
            thread.join(60)
    task = get(store, task_id)
    assert (task.status, task.reason, task.message) == (Status.FAIL, Reason.CANCELLED, "Cancelled by its key.")
    assert any("cancelled by its key while fetching" in r.getMessage() for r in caplog.records)


def test_a_status_line_holding_nul_fails_only_its_task_on_either_store(
    store: TaskStore, storage: LocalStorage, clock: ManualClock
) -> None:
    """A hostile server's status line is quoted in the task's message; PostgreSQL refuses NUL in
    text, so the message writes it out (a refused write used to leave the batch in fetch for good)."""

    class NulStatus(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.recv(4096)
            self.request.sendall(b"\x00\r\n")

    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), NulStatus) as hostile:
        threading.Thread(target=hostile.serve_forever, daemon=True).start()
        worker = make_worker(store, storage, clock, retry=RetryPolicy(max_attempts=1))
        thread = start(worker)
        try:
            [task_id] = add(store, clock, "A", (f"http://127.0.0.1:{hostile.server_address[1]}/a.png",))
            wait_for(lambda: status(store, task_id) is Status.FAIL, timeout=60)
            [plain] = add(store, clock, "B")
            wait_for(lambda: status(store, plain) is Status.DONE, timeout=120)
            assert not worker.stages.references.busy and worker.stages.references.room().fetching == {}
        finally:
            worker.request_stop()
            thread.join(60)
            hostile.shutdown()
    task = get(store, task_id)
    assert task.reason is Reason.REFERENCE_UNREACHABLE and "BadStatusLine: \\x00" in task.message, task.message


def test_a_fetch_whose_outcome_cannot_be_written_still_frees_its_room(
    store: TaskStore, storage: LocalStorage, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever settling a fetch raises, its batch leaves the stage and its key's room is given back
    (the task's lease then runs out and it is taken over, as after any lost write)."""
    worker = make_worker(store, storage, clock)
    references = worker.stages.references

    def refused(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the store refused the write")

    worker.stages.outcomes.failed = refused  # type: ignore[method-assign]
    [task_id] = add(store, clock, "A", ("http://127.0.0.1:9/not-listening.png",))
    with caplog.at_level(logging.ERROR, "aigc_image.worker.references"):
        assert worker.run_once(overlap=True)  # claimed, handed to the fetch threads
        references.wait_ready(30)
        wait_for(lambda: not references.busy, timeout=30)
    assert references.room().fetching == {} and references.take_ready() is None
    assert any("could not be settled" in record.getMessage() for record in caplog.records)
    assert status(store, task_id) is Status.RUN  # its lease, no longer renewed, decides
    worker.request_stop()
    references.close()


# -- the claim: room to fetch, one key per batch, queued again after a failed fetch ----------------

ROOM = FetchRoom(total=3, per_key=2)
SLOW = ("https://images.example/a.png",)


@pytest.fixture(params=list(SchedulingPolicy))
def ordered(request: pytest.FixtureRequest, backend: Backend, clock: ManualClock) -> Iterator[TaskStore]:
    """A store of each kind under each claim order (``worker.scheduling``)."""
    store = open_store(backend.url, clock, scheduling=Scheduling(request.param))
    yield store
    store.close()


def test_a_claim_takes_tasks_with_references_only_as_far_as_the_worker_has_room_to_fetch(
    ordered: TaskStore, clock: ManualClock
) -> None:
    store = ordered
    a, b = add(store, clock, "A", SLOW, count=6), add(store, clock, "B", SLOW, count=3)
    plain = add(store, clock, "C", count=2)
    first = store.claim("w", 8, lease_seconds=60, fetch=ROOM)
    assert [c.task.task_id for c in first] == a[:2]  # per_key 2, and one key's tasks in a batch
    second = store.claim("w", 8, lease_seconds=60, fetch=FetchRoom(3, 2, {"A": 2}))
    assert [c.task.task_id for c in second] == b[:1]  # A is at its cap; room for one more in all
    third = store.claim("w", 8, lease_seconds=60, fetch=FetchRoom(3, 2, {"A": 2, "B": 1}))
    assert [c.task.task_id for c in third] == plain  # no room to fetch: tasks without references go on
    assert store.claim("w", 8, lease_seconds=60, fetch=FetchRoom(3, 2, {"A": 2, "B": 1})) == []


def test_a_batch_with_references_holds_one_keys_tasks_also_when_filled_later(
    ordered: TaskStore, clock: ManualClock
) -> None:
    store = ordered
    a, b = add(store, clock, "A", SLOW, count=4), add(store, clock, "B", SLOW, count=4)
    [first] = store.claim("w", 1, lease_seconds=60)
    assert first.task.task_id == a[0]
    batch_key = first.task.spec.batch_key
    more = store.claim("w", 7, lease_seconds=60, batch_key=batch_key, fetch=FetchRoom(16, 3).for_batch("A", 1))
    assert [c.task.task_id for c in more] == a[1:3]  # the admission window: A's only, up to per_key 3
    rest = store.claim("w", 8, lease_seconds=60)
    fifo = store.scheduling.policy is SchedulingPolicy.FIFO  # type: ignore[attr-defined]
    assert [c.task.task_id for c in rest] == (a[3:] if fifo else b)  # first queued, or the key served least


@pytest.mark.parametrize("requeue", [True, False], ids=["fetch-failed", "other-failure"])
def test_a_task_whose_fetch_failed_goes_behind_the_work_queued_meanwhile(
    ordered: TaskStore, clock: ManualClock, requeue: bool
) -> None:
    """A's task fails and is retried; B's tasks are created after A's, before the retry is due.
    After a failed fetch, B's come first; a retry for another cause keeps its place."""
    store = ordered
    [slow] = add(store, clock, "A", SLOW)
    [claim] = store.claim("w", 1, lease_seconds=60)
    queued = add(store, clock, "B", count=2)
    assert store.retry_later(slow, claim.token, clock.now() + 1, "failed", requeue=requeue)
    clock.advance(2)
    order = [store.claim("w", 1, lease_seconds=60)[0].task.task_id for _ in range(3)]
    assert order == ([*queued, slow] if requeue else [slow, *queued])


def test_the_fetch_time_of_every_attempt_adds_up(store: TaskStore, clock: ManualClock) -> None:
    [task_id] = add(store, clock, "A", SLOW)
    for spent in (1.5, 2.25):
        [claim] = store.claim("w", 1, lease_seconds=60)
        assert store.retry_later(task_id, claim.token, clock.now(), "failed", fetch_seconds=spent, requeue=True)
    assert get(store, task_id).fetch_seconds == 3.75
    assert not store.retry_later(task_id, "stale-token", clock.now(), "failed", fetch_seconds=9, requeue=True)
    [claim] = store.claim("w", 1, lease_seconds=60)  # handed back at shutdown: counted all the same
    assert store.release(task_id, claim.token, fetch_seconds=0.5)
    [claim] = store.claim("w", 1, lease_seconds=60)
    assert store.fail(task_id, claim.token, "gone", Reason.REFERENCE_UNREACHABLE, fetch_seconds=1.0)
    assert get(store, task_id).fetch_seconds == 5.25


def test_fill_gives_a_batch_with_references_no_more_of_a_key_than_its_room() -> None:
    key = "tiny-random:1|64x64|steps=2|guidance=6.0|negative=False|refs=1@None||sampler=|loras="
    heads = [Head("A", key, 0.0, 10, 10.0), Head("B", key, 0.5, 10, 10.0)]
    tenants = {"A": Tenant("A"), "B": Tenant("B")}
    assert fill(heads, key, 7, tenants, {"A": 1}, FetchRoom(16, 4).for_batch("A", 0)) == [("A", 3)]
    assert fill(heads, key, 7, tenants, {"A": 1}, FetchRoom(16, 4, {"A": 2}).for_batch("A", 0)) == [("A", 1)]
    assert fill(heads, key, 7, tenants, {}, FetchRoom(5, 4, {"B": 3})) == [("A", 1), ("B", 1)]  # 2 free in all
    assert FetchRoom(16, 4, {"A": 4}).room("A") == 0 and FetchRoom(16, 4, {"A": 4}).room("B") == 4


# -- the wait for work ends when the worker has work of its own ------------------------------------


def test_interrupt_wait_ends_a_wait_in_progress_and_the_next_one(backend: Backend, clock: ManualClock) -> None:
    store = backend.open(clock)
    store.claim("w", 1, lease_seconds=60)  # listens, as a worker does before it waits
    waited = threading.Event()

    def wait() -> None:
        store.wait_for_work(600)
        waited.set()

    threading.Thread(target=wait, daemon=True).start()
    store.interrupt_wait()
    assert waited.wait(30), "the wait was not interrupted"
    store.interrupt_wait()  # before the wait: the next one returns at once
    done = threading.Event()
    threading.Thread(target=lambda: (store.wait_for_work(600), done.set()), daemon=True).start()
    assert done.wait(30)
    store.close()
