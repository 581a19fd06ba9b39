"""The store conformance suite: every test runs against SQLite and a real PostgreSQL.

Like River's driver suite and Oban's engine tests, one set of behaviours, one parametrised
fixture (``backend``); store-specific tests are at the end.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import socket
import sqlite3
import threading
from pathlib import Path

import psycopg
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from aigc_image.clock import ManualClock, SystemClock
from aigc_image.errors import Reason
from aigc_image.store import StoreError, StoreUnavailable, TaskStore, open_store
from aigc_image.store.base import ActiveTaskLimit
from aigc_image.store.migrations import migrations
from aigc_image.store.sqlite import SqliteStore
from aigc_image.tasks import Claim, NewTask, Status, Task, TaskSpec, new_task_id
from tests.helpers import create, get
from tests.postgres_server import PostgresServer
from tests.stores import Backend


def spec(model: str = "tiny-random", width: int = 64, prompt: str = "p") -> TaskSpec:
    return TaskSpec(model, "1", prompt, "", 1, "png", width, width, 10, 6.0, "")


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
    assert not store.fail(task_id, first.token, "stale", Reason.INTERNAL)
    assert store.fail(task_id, second.token, "real failure", Reason.OUT_OF_MEMORY)
    assert not store.complete(task_id, second.token, ["late"])  # finished tasks stay finished
    task = get(store, task_id)
    assert task is not None and task.status is Status.FAIL and task.message == "real failure"
    assert task.reason is Reason.OUT_OF_MEMORY


def test_the_tasks_of_an_expired_lease_are_taken_over_alone_and_first(store: TaskStore, clock: ManualClock) -> None:
    ids = []
    for index in range(3):
        task_id = new_task_id()
        create(store, task_id, "k", spec(prompt=str(index)))
        ids.append(task_id)
        clock.advance(1)
    assert len(store.claim("w1", 2, lease_seconds=10)) == 2  # ids[0] and ids[1]: then w1 dies
    clock.advance(11)
    taken = [store.claim("w2", 8, lease_seconds=10) for _ in range(3)]
    assert [[(c.task.task_id, c.alone, c.task.attempts) for c in claims] for claims in taken] == [
        [(ids[0], True, 2)],
        [(ids[1], True, 2)],
        [(ids[2], False, 1)],
    ]
    assert store.claim("w2", 8, lease_seconds=10, batch_key=spec().batch_key) == []  # never added to a batch


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
    assert task.reason is Reason.WORKER_LOST
    store.close()


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


def test_a_row_the_database_refuses_fails_only_its_own_create(store: TaskStore) -> None:
    """One create in a group commit that the database refuses (here: a duplicate key, in another
    tenant's batch) fails alone; the others in the same batch are retried and stored."""
    duplicate, good, other_tenant = new_task_id(), new_task_id(), new_task_id()

    async def create_batch() -> list[object]:
        calls = [store.create(NewTask(good, "a", spec())), store.create(NewTask(duplicate, "a", spec()))]
        calls.append(store.create(NewTask(duplicate, "a", spec())))  # violates the primary key
        calls.append(store.create(NewTask(other_tenant, "b", spec())))
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(create_batch())
    assert results[0] == good and results[1] == duplicate and results[3] == other_tenant
    assert isinstance(results[2], Exception)
    claimed = {claim.task.task_id for claim in store.claim("w", limit=10, lease_seconds=60)}
    assert claimed == {good, duplicate, other_tenant}


def test_a_replayed_fingerprint_returns_the_original_task(store: TaskStore) -> None:
    first = asyncio.run(store.create(NewTask(new_task_id(), "k", spec(), request_fingerprint="f1")))
    again = asyncio.run(store.create(NewTask(new_task_id(), "k", spec(), request_fingerprint="f1")))
    other = asyncio.run(store.create(NewTask(new_task_id(), "k", spec(), request_fingerprint="f2")))
    assert again == first and other != first
    assert len(store.claim("w", limit=10, lease_seconds=60)) == 2


def test_a_fingerprint_with_a_window_joins_only_within_it(store: TaskStore, clock: ManualClock) -> None:
    """The /v1 retry rule: the same request again within the window gets the first task, at any
    point of the window (across the store's period boundaries too); after it, a new task."""

    def create_again(joins: bool = True) -> str:
        new = NewTask(new_task_id(), "k", spec(), "fp", fingerprint_window=60, joins_earlier=joins)
        return asyncio.run(store.create(new))

    clock.advance(59.5 - clock.now() % 60)  # just before a period boundary
    first = create_again()
    clock.advance(1)  # the next period
    assert create_again() == first
    clock.advance(58)  # 59 s after the first
    assert create_again() == first
    clock.advance(1.5)  # past the window
    second = create_again()
    assert second != first
    assert create_again() == second
    third = create_again(joins=False)  # a request its client says is new
    assert third not in (first, second)
    assert create_again() == second  # the fingerprint stays with the task that had it
    assert asyncio.run(store.create(NewTask(new_task_id(), "k", spec(), "fp"))) not in (first, second, third)


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


def test_creates_from_two_api_processes_share_one_cap_and_one_replay_record(
    backend: Backend, clock: ManualClock
) -> None:
    """Two store objects (two API processes) creating at once: the cap and replays hold across them."""
    first, second = backend.open(clock), backend.open(clock)

    async def race() -> list[object]:
        calls = [
            store.create(NewTask(new_task_id(), "k", spec(), request_fingerprint=f"f{n % 5}"), max_active_per_key=4)
            for n in range(20)
            for store in (first, second)
        ]
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(race())
    created = {r for r in results if isinstance(r, str)}
    assert len(created) == 4  # five distinct requests, but at most four may wait
    assert sum(isinstance(r, ActiveTaskLimit) for r in results) >= 1
    assert not [r for r in results if not isinstance(r, (str, ActiveTaskLimit))]
    assert len(first.claim("w", limit=10, lease_seconds=60)) == 4
    first.close()
    second.close()


def test_a_finish_retried_after_an_unknown_outcome_is_answered_true_once_recorded(store: TaskStore) -> None:
    task_id = new_task_id()
    create(store, task_id, "k", spec())
    [claim] = store.claim("w", 1, lease_seconds=60)
    assert store.complete(task_id, claim.token, ["a"])
    assert store.complete(task_id, claim.token, ["a"])  # the worker could not tell whether it committed
    assert not store.fail(task_id, claim.token, "no", Reason.INTERNAL)  # but a finished task never changes outcome
    assert not store.heartbeat(task_id, claim.token, 60)
    task = get(store, task_id)
    assert task is not None and task.status is Status.DONE and task.result_keys == ("a",)


def test_released_tasks_wake_a_waiting_worker(backend: Backend, clock: ManualClock) -> None:
    holder, waiter = backend.open(clock), backend.open(clock)
    create(holder, new_task_id(), "k", spec())
    [claim] = holder.claim("w1", 1, lease_seconds=60)
    assert waiter.claim("w2", 1, lease_seconds=60) == []  # also starts listening
    woke = threading.Event()
    thread = threading.Thread(target=lambda: (waiter.wait_for_work(30), woke.set()))
    thread.start()
    assert holder.release(claim.task.task_id, claim.token)
    assert woke.wait(10), "the waiting worker was not woken by release()"
    thread.join(60)
    [again] = waiter.claim("w2", 1, lease_seconds=60)
    assert again.task.attempts == 1  # the released attempt was not counted
    holder.close()
    waiter.close()


def test_list_tasks_pages_newest_first_per_key_with_filters(store: TaskStore, clock: ManualClock) -> None:
    ids = []
    for _ in range(5):
        ids.append(new_task_id())
        create(store, ids[-1], "k", spec())
        clock.advance(1)
    create(store, new_task_id(), "someone-else", spec())
    [claim] = store.claim("w", 1, lease_seconds=60)  # the oldest
    assert store.complete(claim.task.task_id, claim.token, [])

    def listed(**filters: object) -> tuple[int, list[str]]:
        args = {"status": None, "task_id": None, "offset": 0, "limit": 10} | filters
        total, tasks = asyncio.run(store.list_tasks("k", **args))  # type: ignore[arg-type]
        return total, [t.task_id for t in tasks]

    assert listed() == (5, ids[::-1])
    assert listed(offset=1, limit=2) == (5, [ids[3], ids[2]])
    assert listed(offset=5) == (5, [])
    assert listed(status=Status.DONE) == (1, [ids[0]])
    assert listed(status=Status.WAIT) == (4, ids[:0:-1])
    assert listed(task_id=ids[2]) == (1, [ids[2]])
    assert listed(task_id=ids[2], status=Status.DONE) == (0, [])


def test_heartbeats_record_progress_and_a_new_attempt_starts_from_zero(store: TaskStore, clock: ManualClock) -> None:
    task_id = new_task_id()
    create(store, task_id, "k", spec())
    [first] = store.claim("w", 1, lease_seconds=10)
    assert store.heartbeat(task_id, first.token, 10, progress=(4, 10))
    task = get(store, task_id)
    assert task is not None and (task.step, task.steps) == (4, 10)
    assert store.heartbeat(task_id, first.token, 10)  # a timer heartbeat keeps the progress
    assert get(store, task_id).step == 4
    clock.advance(11)
    [second] = store.claim("w2", 1, lease_seconds=10)
    assert second.task.step == 0


# -- PostgreSQL outages -------------------------------------------------------------------------


def test_a_postgresql_restart_is_an_outage_then_the_store_reconnects(postgres: PostgresServer) -> None:
    """R7 at the store level: calls during the outage raise StoreUnavailable; afterwards the same
    store object works again, for the API side, the worker side and the listener."""
    clock = ManualClock()
    store = open_store(postgres.new_database(), clock)
    task_id = new_task_id()
    create(store, task_id, "k", spec())
    store.wait_for_work(0)  # the listener connection exists
    postgres.stop()
    try:
        with pytest.raises(StoreUnavailable):
            get(store, task_id)
        with pytest.raises(StoreUnavailable):
            store.claim("w", 1, lease_seconds=60)
        with pytest.raises(StoreUnavailable):
            create(store, new_task_id(), "k", spec())
    finally:
        postgres.start()
    task = get(store, task_id)
    assert task is not None and task.status is Status.WAIT
    [claim] = store.claim("w", 1, lease_seconds=60)
    assert store.complete(task_id, claim.token, [])
    woke = threading.Event()
    thread = threading.Thread(target=lambda: (store.wait_for_work(30), woke.set()))
    thread.start()
    other = open_store(store_url(store), clock)
    create(other, new_task_id(), "k", spec())
    assert woke.wait(10), "the listener did not come back after the restart"
    thread.join(60)
    store.close()
    other.close()


def store_url(store: TaskStore) -> str:
    return str(store._url)  # type: ignore[attr-defined]


def test_an_unreachable_postgresql_names_the_server_and_hides_the_password() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(StoreError) as refused:
        open_store(f"postgresql://user:hunter2@127.0.0.1:{port}/db", ManualClock())
    assert f"port={port}" in str(refused.value) and "hunter2" not in str(refused.value)


# -- R11: a stateful property test ------------------------------------------------------------------


def test_random_sequences_of_operations_keep_the_store_invariants(backend: Backend) -> None:
    """R11: any interleaving of submit / claim / heartbeat / complete / fail / retry / release /
    time passing / reaping keeps: one state per task, one live lease per task, attempts within
    the maximum, finished tasks never change, and a stale token never writes."""
    run_state_machine_as_test(
        lambda: StoreMachine(backend),
        settings=settings(max_examples=20, stateful_step_count=25, deadline=None),
    )


MAX_ATTEMPTS = 3


class StoreMachine(RuleBasedStateMachine):
    claims = Bundle("claims")

    def __init__(self, backend: Backend) -> None:
        super().__init__()
        self.clock = ManualClock()
        self.store = backend.open(self.clock, max_attempts=MAX_ATTEMPTS)
        backend.clear()  # one database serves every example
        self.ids: list[str] = []
        self.current: dict[str, str | None] = {}  # task -> the token that holds (or finished) it
        self.finished: dict[str, Task] = {}

    @rule()
    def submit(self) -> None:
        task_id = new_task_id()
        create(self.store, task_id, "k", spec())
        self.ids.append(task_id)
        self.current[task_id] = None

    @rule(target=claims, lease=st.sampled_from([5.0, 30.0]))
    def claim(self, lease: float) -> list[Claim]:
        taken = self.store.claim("w", 2, lease_seconds=lease)
        for claim in taken:
            assert claim.task.task_id in self.current and claim.task.task_id not in self.finished
            self.current[claim.task.task_id] = claim.token
        return taken

    @rule(claims=claims, action=st.sampled_from(["heartbeat", "complete", "fail", "retry_later", "release"]))
    def act(self, claims: list[Claim], action: str) -> None:
        for claim in claims:
            task_id, token = claim.task.task_id, claim.token
            before = get(self.store, task_id)
            holds = before is not None and before.status is Status.RUN and self.current[task_id] == token
            if action == "heartbeat":
                answered = self.store.heartbeat(task_id, token, 30)
            elif action == "complete":
                answered = self.store.complete(task_id, token, [f"{task_id}/x.png"])
            elif action == "fail":
                answered = self.store.fail(task_id, token, "failed", Reason.INTERNAL)
            elif action == "retry_later":
                answered = self.store.retry_later(task_id, token, self.clock.now() + 3, "retry")
            else:
                answered = self.store.release(task_id, token)
            finished_by_this = task_id in self.finished and self.current[task_id] == token
            expected = holds or (
                finished_by_this
                and action in ("complete", "fail")
                and self.finished[task_id].status.value == ("DONE" if action == "complete" else "FAIL")
            )
            assert answered == expected, (action, before)
            if answered and action in ("retry_later", "release"):
                self.current[task_id] = None

    @rule(seconds=st.sampled_from([1.0, 4.0, 6.0, 31.0]))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def reap(self) -> None:
        self.store.fail_exhausted()

    @invariant()
    def states_are_consistent(self) -> None:
        for task_id in self.ids:
            task = get(self.store, task_id)
            assert task is not None and task.status in Status
            assert 0 <= task.attempts <= MAX_ATTEMPTS
            if task_id in self.finished:
                assert task == self.finished[task_id], "a finished task changed"
            elif task.status in (Status.DONE, Status.FAIL):
                self.finished[task_id] = task

    def teardown(self) -> None:
        self.store.close()


# -- R12: migration parity --------------------------------------------------------------------------


def test_both_databases_migrate_to_the_same_schema(tmp_path: Path, postgres: PostgresServer) -> None:
    """R12: the SQLite migrations, applied in order, and the PostgreSQL ones give the same
    columns (names, nullability, defaults' meaning) and the same named indexes."""
    clock = ManualClock()
    SqliteStore(str(tmp_path / "db"), clock).close()
    with sqlite3.connect(tmp_path / "db") as db:
        sqlite_columns = {(row[1], bool(row[3])) for row in db.execute("PRAGMA table_info(tasks)")}
        sqlite_indexes = {row[1] for row in db.execute("PRAGMA index_list(tasks)") if not row[1].startswith("sqlite_")}
    url = postgres.new_database()
    open_store(url, clock).close()
    with psycopg.connect(url) as db:
        pg_columns = {
            (name, nullable == "NO")
            for name, nullable in db.execute(
                "SELECT column_name, is_nullable FROM information_schema.columns WHERE table_name = 'tasks'"
            )
        }
        pg_indexes = {row[0] for row in db.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'tasks'")}
    assert sqlite_columns == {(name, notnull and name != "task_id") for name, notnull in pg_columns} | {
        ("task_id", False)  # SQLite reports a TEXT PRIMARY KEY as nullable; it is the key all the same
    }
    assert sqlite_indexes == pg_indexes - {"tasks_pkey"}


def test_an_old_sqlite_database_is_upgraded_with_its_tasks(tmp_path: Path) -> None:
    """A database left by the first release (migration 0001 only) opens, migrates and keeps its rows."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript(migrations("sqlite")[0][1])
        db.execute(
            "INSERT INTO tasks (task_id, secret_id, status, spec, batch_key, created_at) VALUES (?, 'k', 'WAIT', ?, "
            "'b', 1.0)",
            ("4-AigcImage-" + "0" * 32, spec().to_json()),
        )
        db.execute("PRAGMA user_version = 1")
    store = SqliteStore(str(path), ManualClock())
    task = get(store, "4-AigcImage-" + "0" * 32)
    assert task is not None and task.status is Status.WAIT and task.spec == spec()
    assert [c.task.task_id for c in store.claim("w", 1, lease_seconds=60)] == [task.task_id]
    store.close()
