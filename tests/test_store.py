"""The store conformance suite: every test runs against SQLite and a real PostgreSQL.

Like River's driver suite and Oban's engine tests, one set of behaviours, one parametrised
fixture (``backend``); store-specific tests are at the end.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
from collections.abc import Iterator

import pytest

from aigc_image.clock import ManualClock, SystemClock
from aigc_image.store import TaskStore, open_store
from aigc_image.store.base import ActiveTaskLimit
from aigc_image.store.migrations import migrations
from aigc_image.tasks import NewTask, Status, TaskSpec, new_task_id
from tests.helpers import create, get
from tests.stores import Backend


def spec(model: str = "tiny-random", width: int = 64, prompt: str = "p") -> TaskSpec:
    return TaskSpec(model, "1", prompt, "", 1, "png", width, width, 10, 6.0, "")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store(backend: Backend, clock: ManualClock) -> Iterator[TaskStore]:
    store = backend.open(clock)
    yield store
    store.close()


def test_create_then_get_round_trips_the_spec(store: TaskStore, clock: ManualClock) -> None:
    task_id = new_task_id()
    create(store, task_id, "AKIDa", spec(prompt="猫 and a dog"))
    task = get(store, task_id)
    assert task is not None
    assert (task.status, task.secret_id, task.spec, task.created_at) == (
        Status.WAIT, "AKIDa", spec(prompt="猫 and a dog"), clock.now(),
    )  # fmt: skip
    assert get(store, new_task_id()) is None


def test_claim_complete_is_the_happy_path(store: TaskStore) -> None:
    task_id = new_task_id()
    create(store, task_id, "k", spec())
    [claim] = store.claim("w1", limit=1, lease_seconds=60)
    assert claim.task.task_id == task_id and claim.task.status is Status.RUN and claim.task.attempts == 1
    assert store.claim("w2", limit=1, lease_seconds=60) == []
    assert store.complete(task_id, claim.token, ["a/1-0.png"])
    done = get(store, task_id)
    assert done is not None and done.status is Status.DONE and done.result_keys == ("a/1-0.png",)
    assert done.message == "ok"


def test_only_the_lease_holder_can_finish(store: TaskStore, clock: ManualClock) -> None:
    task_id = new_task_id()
    create(store, task_id, "k", spec())
    [first] = store.claim("w1", 1, lease_seconds=10)
    clock.advance(11)  # w1 stalls past its lease; w2 takes over
    [second] = store.claim("w2", 1, lease_seconds=10)
    assert second.task.attempts == 2 and second.token != first.token
    assert not store.heartbeat(task_id, first.token, 10)
    assert not store.complete(task_id, first.token, ["stale"])
    assert not store.fail(task_id, first.token, "stale")
    assert store.fail(task_id, second.token, "real failure")
    assert not store.complete(task_id, second.token, ["late"])  # finished tasks stay finished
    task = get(store, task_id)
    assert task is not None and task.status is Status.FAIL and task.message == "real failure"


def test_heartbeat_keeps_the_lease(store: TaskStore, clock: ManualClock) -> None:
    task_id = new_task_id()
    create(store, task_id, "k", spec())
    [claim] = store.claim("w1", 1, lease_seconds=10)
    for _ in range(5):
        clock.advance(8)
        assert store.heartbeat(task_id, claim.token, 10)
        assert store.claim("w2", 1, 10) == []


def test_exhausted_tasks_fail_with_a_message(backend: Backend, clock: ManualClock) -> None:
    store = backend.open(clock, max_attempts=2)
    task_id = new_task_id()
    create(store, task_id, "k", spec())
    for _ in range(2):
        assert store.claim("w", 1, lease_seconds=5)
        clock.advance(6)
    assert store.claim("w", 1, 5) == []
    assert store.fail_exhausted() == 1
    task = get(store, task_id)
    assert task is not None and task.status is Status.FAIL and "2 times" in task.message


def test_claim_batches_only_compatible_tasks_oldest_first(store: TaskStore, clock: ManualClock) -> None:
    ids = []
    for index, width in enumerate([64, 128, 64, 64, 64]):
        task_id = new_task_id()
        create(store, task_id, "k", spec(width=width, prompt=str(index)))
        ids.append(task_id)
        clock.advance(1)
    claims = store.claim("w", limit=3, lease_seconds=60)
    assert [c.task.task_id for c in claims] == [ids[0], ids[2], ids[3]]
    assert len({c.token for c in claims}) == 1
    assert [c.task.task_id for c in store.claim("w", limit=3, lease_seconds=60)] == [ids[1]]


def test_concurrent_claimers_in_eight_processes_complete_each_task_once(backend: Backend, clock: ManualClock) -> None:
    """R1: 200 tasks, 8 OS processes looping claim → complete; no task twice, none missed."""
    creator = backend.open(clock)
    ids = {new_task_id() for _ in range(200)}
    for task_id in ids:
        create(creator, task_id, "k", spec())
    creator.close()
    with multiprocessing.get_context("spawn").Pool(8) as pool:
        per_process = pool.map(claim_until_empty, [(backend.url, f"w{n}") for n in range(8)])
    completed = [task_id for done in per_process for task_id in done]
    assert sorted(completed) == sorted(ids)


def claim_until_empty(args: tuple[str, str]) -> list[str]:
    """One claimer process: claim in small batches and complete, until the queue is empty."""
    url, worker_id = args
    store = open_store(url, SystemClock())
    completed = []
    while batch := store.claim(worker_id, limit=2, lease_seconds=600):
        for claim in batch:
            assert store.complete(claim.task.task_id, claim.token, [f"{claim.task.task_id}/1-0.png"])
            completed.append(claim.task.task_id)
    store.close()
    return completed


def test_migrations_are_numbered_and_applied_once(backend: Backend, clock: ManualClock) -> None:
    numbers = [number for number, _ in migrations(backend.kind)]
    assert numbers == sorted(set(numbers)) and numbers[0] == 1
    first = backend.open(clock)
    task_id = new_task_id()
    create(first, task_id, "k", spec())
    first.close()
    again = backend.open(clock)
    assert again.schema_version() == numbers[-1]  # type: ignore[attr-defined]
    assert get(again, task_id) is not None
    again.close()


def test_create_wakes_a_waiting_worker_at_once(backend: Backend, clock: ManualClock) -> None:
    worker_side = backend.open(clock)
    api_side = backend.open(clock)
    worker_side.wait_for_work(0.01)  # registers the wake socket
    woke = threading.Event()

    def wait() -> None:
        worker_side.wait_for_work(30)
        woke.set()

    thread = threading.Thread(target=wait)
    thread.start()
    create(api_side, new_task_id(), "k", spec())
    assert woke.wait(10), "the worker was not woken by create()"
    thread.join()
    worker_side.close()
    api_side.close()


def test_concurrent_creates_are_group_committed_and_all_stored(store: TaskStore) -> None:
    ids = [new_task_id() for _ in range(50)]

    async def create_all() -> None:
        await asyncio.gather(*(store.create(NewTask(task_id, "k", spec())) for task_id in ids))

    asyncio.run(create_all())
    assert all(get(store, task_id) is not None for task_id in ids)


def test_a_failed_group_commit_fails_every_caller_and_stores_nothing(store: TaskStore) -> None:
    duplicate = new_task_id()

    async def create_batch() -> list[object]:
        calls = [store.create(NewTask(new_task_id(), "k", spec())), store.create(NewTask(duplicate, "k", spec()))]
        calls.append(store.create(NewTask(duplicate, "k", spec())))  # violates the primary key: the batch fails
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(create_batch())
    assert all(isinstance(result, Exception) for result in results)
    assert store.claim("w", limit=10, lease_seconds=60) == []


def test_a_replayed_fingerprint_returns_the_original_task(store: TaskStore) -> None:
    first = asyncio.run(store.create(NewTask(new_task_id(), "k", spec(), request_fingerprint="f1")))
    again = asyncio.run(store.create(NewTask(new_task_id(), "k", spec(), request_fingerprint="f1")))
    other = asyncio.run(store.create(NewTask(new_task_id(), "k", spec(), request_fingerprint="f2")))
    assert again == first and other != first
    assert len(store.claim("w", limit=10, lease_seconds=60)) == 2


def test_concurrent_replays_in_one_batch_make_one_task(store: TaskStore) -> None:
    async def replay() -> list[str]:
        calls = [store.create(NewTask(new_task_id(), "k", spec(), request_fingerprint="same")) for _ in range(20)]
        return await asyncio.gather(*calls)

    assert len(set(asyncio.run(replay()))) == 1
    assert len(store.claim("w", limit=30, lease_seconds=60)) == 1


def test_the_per_key_cap_counts_waiting_and_running_tasks(store: TaskStore) -> None:
    async def create_many(key: str, count: int) -> list[object]:
        calls = [store.create(NewTask(new_task_id(), key, spec()), max_active_per_key=3) for _ in range(count)]
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(create_many("a", 5))  # one batch: the cap applies within it too
    assert sum(isinstance(r, str) for r in results) == 3
    assert sum(isinstance(r, ActiveTaskLimit) for r in results) == 2
    assert all(isinstance(r, str) for r in asyncio.run(create_many("b", 3)))  # other keys are not affected
    [claim] = store.claim("w", limit=1, lease_seconds=60)  # RUN still counts
    assert isinstance(asyncio.run(create_many(claim.task.secret_id, 1))[0], ActiveTaskLimit)
    assert store.complete(claim.task.task_id, claim.token, [])  # finishing frees a place
    assert isinstance(asyncio.run(create_many(claim.task.secret_id, 1))[0], str)
