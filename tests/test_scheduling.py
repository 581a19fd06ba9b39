"""Fair scheduling, model affinity, cancel, delete and queue positions in the store, on SQLite and a
real PostgreSQL (the ``store`` and ``backend`` fixtures). The injected clock moves time; nothing
sleeps. The policy itself is tested on its own in test_fairness.py.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import threading
from collections import Counter

import pytest

from aigc_image.clock import ManualClock, SystemClock
from aigc_image.config import SchedulingPolicy
from aigc_image.errors import Reason
from aigc_image.store import Scheduling, TaskStore, WorkerRecord, open_store
from aigc_image.tasks import Claim, NewTask, Status, TaskSpec, new_task_id
from tests.helpers import get
from tests.stores import Backend


def spec(model: str = "tiny-random", steps: int = 10, prompt: str = "p") -> TaskSpec:
    return TaskSpec(model, "1", prompt, "", 1, "png", 64, 64, steps, 6.0, "")


def add(
    store: TaskStore, clock: ManualClock, key: str, count: int = 1, weight: float = 1.0, model: str = "tiny-random"
) -> list[str]:
    """``count`` tasks of ``key``, a millisecond apart."""
    ids = []
    for index in range(count):
        ids.append(new_task_id())
        asyncio.run(store.create(NewTask(ids[-1], key, spec(model, prompt=str(index)), weight=weight)))
        clock.advance(0.001)
    return ids


def drain(store: TaskStore, limit: int, worker: str = "w", **claim: object) -> list[list[Claim]]:
    """Claim and complete until nothing is claimable; the batches, in order."""
    batches = []
    while batch := store.claim(worker, limit, lease_seconds=60, **claim):  # type: ignore[arg-type]
        batches.append(batch)
        for one in batch:
            assert store.complete(one.task.task_id, one.token, [])
    return batches


def keys_of(batches: list[list[Claim]]) -> list[str]:
    return ["".join(claim.task.secret_id for claim in batch) for batch in batches]


# -- the fair order ---------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [8, 1])
def test_a_burst_from_one_key_does_not_hold_back_another(store: TaskStore, clock: ManualClock, limit: int) -> None:
    """The issue's burst: A sends 60, then B one. B's task is in A's first batch (max_batch 8), or
    the second task claimed (max_batch 1), not after A's whole burst."""
    add(store, clock, "A", 60)
    [lonely] = add(store, clock, "B")
    batches = drain(store, limit)
    position = next(i for i, batch in enumerate(batches) if any(c.task.task_id == lonely for c in batch))
    assert position == (0 if limit == 8 else 1)
    assert sum(len(batch) for batch in batches) == 61


def test_fifo_keeps_todays_first_come_order(backend: Backend, clock: ManualClock) -> None:
    store = open_store(backend.url, clock, scheduling=Scheduling(SchedulingPolicy.FIFO))
    add(store, clock, "A", 60)
    [lonely] = add(store, clock, "B")
    batches = drain(store, 8)
    assert batches[-1][-1].task.task_id == lonely and len(batches) == 8
    store.close()


def test_busy_keys_interleave_oldest_first_within_each(store: TaskStore, clock: ManualClock) -> None:
    a, b = add(store, clock, "A", 10), add(store, clock, "B", 10)
    claimed = [claim.task.task_id for batch in drain(store, 1) for claim in batch]
    assert claimed == [task for pair in zip(a, b, strict=True) for task in pair]


def test_a_key_of_weight_two_gets_twice_the_share(store: TaskStore, clock: ManualClock) -> None:
    add(store, clock, "A", 40, weight=2.0)
    add(store, clock, "B", 40)
    shares = Counter(store.claim("w", 1, lease_seconds=60)[0].task.secret_id for _ in range(30))
    assert shares == {"A": 20, "B": 10}


def test_claims_carry_their_keys_weight(store: TaskStore, clock: ManualClock) -> None:
    add(store, clock, "A", 1, weight=3.0)
    [claim] = store.claim("w", 1, lease_seconds=60)
    assert claim.weight == 3.0


def test_a_key_returning_after_idling_starts_even_with_the_busy_key(store: TaskStore, clock: ManualClock) -> None:
    add(store, clock, "A", 30)
    for _ in range(20):
        drain_one(store)  # A alone for a while: its virtual time runs ahead of B's
    add(store, clock, "B", 10)
    assert keys_of([store.claim("w", 1, lease_seconds=60) for _ in range(6)]) == ["A", "B", "A", "B", "A", "B"]


def drain_one(store: TaskStore) -> None:
    [claim] = store.claim("w", 1, lease_seconds=60)
    assert store.complete(claim.task.task_id, claim.token, [])


def test_a_new_key_is_served_within_one_claim_per_busy_key_whatever_they_send(
    store: TaskStore, clock: ManualClock
) -> None:
    """The starvation bound on the store: three keys keep 20 tasks each waiting; a fourth key's
    task is claimed within three claims (one per busy key), again and again."""
    for key in "ABC":
        add(store, clock, key, 20)
    for _ in range(5):
        [task_id] = add(store, clock, "D")
        claimed = [store.claim("w", 1, lease_seconds=60)[0] for _ in range(4)]
        assert task_id in [claim.task.task_id for claim in claimed[:4]], keys_of([[c] for c in claimed])
        for key in "ABC":
            add(store, clock, key, sum(1 for c in claimed if c.task.secret_id == key))  # they keep sending


def test_a_task_retried_later_waits_for_its_retry_time_in_the_fair_order_too(
    store: TaskStore, clock: ManualClock
) -> None:
    [task_id] = add(store, clock, "A")
    [claim] = store.claim("w", 1, lease_seconds=60)
    assert store.retry_later(task_id, claim.token, clock.now() + 5, "transient")
    add(store, clock, "B")
    assert [c.task.secret_id for c in store.claim("w", 8, lease_seconds=60)] == ["B"]
    clock.advance(5)
    assert [c.task.task_id for c in store.claim("w", 8, lease_seconds=60)] == [task_id]


def test_a_task_taken_over_still_comes_first_and_alone(store: TaskStore, clock: ManualClock) -> None:
    add(store, clock, "A", 3)
    [stalled, *_] = store.claim("dead", 8, lease_seconds=10)
    add(store, clock, "B", 3)
    clock.advance(11)
    taken = store.claim("w", 8, lease_seconds=60)
    assert len(taken) == 1 and taken[0].alone and taken[0].task.task_id == stalled.task.task_id


def test_creates_from_two_api_processes_record_each_keys_weight(backend: Backend, clock: ManualClock) -> None:
    first, second = backend.open(clock), backend.open(clock)

    async def race() -> None:
        calls = [
            api.create(NewTask(new_task_id(), key, spec(prompt=str(n)), weight=weight))
            for n in range(10)
            for api, key, weight in ((first, "A", 2.0), (second, "B", 1.0), (second, "A", 2.0), (first, "B", 1.0))
        ]
        await asyncio.gather(*calls)

    asyncio.run(race())
    shares = Counter(first.claim("w", 1, lease_seconds=60)[0].task.secret_id for _ in range(30))
    assert shares == {"A": 20, "B": 10}
    first.close()
    second.close()


# -- model affinity ----------------------------------------------------------------------------------


def test_a_worker_stays_with_its_loaded_model_for_at_most_affinity_wait(store: TaskStore, clock: ManualClock) -> None:
    [other] = add(store, clock, "B", model="other")
    waited = 0.0
    while True:
        add(store, clock, "A")  # a steady stream for the loaded model, from a key served more than B
        [claim] = store.claim("w", 1, lease_seconds=60, loaded=["tiny-random:1"])
        if claim.task.task_id == other:
            break
        clock.advance(1.0)
        waited += 1.0
        assert waited <= 10.0, "the other model's task waited past worker.affinity_wait"
    assert waited >= 9.0  # and it was passed over until then


def test_a_key_alternating_two_models_swaps_once(store: TaskStore, clock: ManualClock) -> None:
    for index in range(40):
        add(store, clock, "A", model="x" if index % 2 == 0 else "y")
    loaded: list[str] = []
    models = []
    for _ in range(40):
        [claim] = store.claim("w", 1, lease_seconds=60, loaded=loaded)
        loaded = [f"{claim.task.spec.model_name}:1"]  # worker.max_loaded_models = 1
        models.append(claim.task.spec.model_name)
        clock.advance(0.1)
    assert sum(1 for a, b in itertools.pairwise(models) if a != b) == 1


def test_two_busy_keys_on_two_models_do_not_make_a_worker_swap_at_every_task(
    store: TaskStore, clock: ManualClock
) -> None:
    add(store, clock, "A", 40, model="x")
    add(store, clock, "B", 40, model="y")
    clock.advance(60)  # both backlogs are older than affinity_wait
    loaded, since, ran = ["x:1"], clock.now(), []
    for _ in range(60):
        [claim] = store.claim("w", 1, lease_seconds=60, loaded=loaded, loaded_since=since)
        model = f"{claim.task.spec.model_name}:1"
        if model not in loaded:
            loaded, since = [model], clock.now()
        ran.append(claim.task)
        clock.advance(1.0)  # a task a second
    assert sum(1 for a, b in itertools.pairwise(ran) if a.spec.model_name != b.spec.model_name) <= 6
    shares = Counter(task.secret_id for task in ran)
    assert abs(shares["A"] - shares["B"]) <= 10


def idle_worker(store: TaskStore, clock: ManualClock, worker_id: str, loaded: list[str], state: str = "idle") -> None:
    now = clock.now()
    store.record_worker(WorkerRecord(worker_id, "host", "cpu", now, now, state, loaded=loaded))


def test_a_model_loaded_on_another_idle_worker_is_left_to_it(store: TaskStore, clock: ManualClock) -> None:
    idle_worker(store, clock, "has-it", ["other:1"])
    [task_id] = add(store, clock, "A", model="other")
    assert store.claim("lacks-it", 8, lease_seconds=60, loaded=["tiny-random:1"]) == []
    [claim] = store.claim("has-it", 8, lease_seconds=60, loaded=["other:1"])
    assert claim.task.task_id == task_id


def test_past_affinity_wait_any_worker_takes_it(store: TaskStore, clock: ManualClock) -> None:
    idle_worker(store, clock, "has-it", ["other:1"])
    [task_id] = add(store, clock, "A", model="other")
    clock.advance(10)
    idle_worker(store, clock, "has-it", ["other:1"])  # still alive and idle, but it did not take it
    assert [c.task.task_id for c in store.claim("lacks-it", 8, lease_seconds=60)] == [task_id]


def test_a_busy_worker_with_the_model_does_not_hold_its_tasks_back(store: TaskStore, clock: ManualClock) -> None:
    idle_worker(store, clock, "has-it", ["other:1"])
    add(store, clock, "A", 2, model="other")
    assert len(store.claim("has-it", 1, lease_seconds=60, loaded=["other:1"])) == 1  # its claim marks it busy
    assert len(store.claim("lacks-it", 1, lease_seconds=60)) == 1
    assert [w.state for w in store.workers()] == ["busy"]


def test_workers_in_several_processes_claim_each_task_once_in_fair_order(backend: Backend, clock: ManualClock) -> None:
    """Four worker processes over one database, batches of 2, two keys of 40 tasks: every task is
    claimed once, and each worker's own claims alternate the keys."""
    creator = backend.open(clock)
    add(creator, clock, "A", 40)
    add(creator, clock, "B", 40)
    creator.close()
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        per_worker = pool.map(claim_all, [(backend.url, f"w{n}") for n in range(4)])
    claimed = [task for batches in per_worker for batch in batches for task, _ in batch]
    assert len(claimed) == 80 and len(set(claimed)) == 80
    for batches in per_worker:
        keys = [key for batch in batches for _, key in batch]
        assert abs(keys.count("A") - keys.count("B")) <= 4, keys


def claim_all(args: tuple[str, str]) -> list[list[tuple[str, str]]]:
    url, worker = args
    store = open_store(url, SystemClock())
    batches = []
    while batch := store.claim(worker, 2, lease_seconds=600):
        batches.append([(c.task.task_id, c.task.secret_id) for c in batch])
        for claim in batch:
            assert store.complete(claim.task.task_id, claim.token, [])
    store.close()
    return batches


def test_threads_claiming_at_once_share_the_keys_fairly(backend: Backend, clock: ManualClock) -> None:
    stores = [backend.open(clock) for _ in range(3)]
    add(stores[0], clock, "A", 30)
    add(stores[0], clock, "B", 30)
    order: list[str] = []
    lock = threading.Lock()

    def work(store: TaskStore, worker: str) -> None:
        while batch := store.claim(worker, 1, lease_seconds=60):
            with lock:
                order.append(batch[0].task.secret_id)

    threads = [threading.Thread(target=work, args=(s, f"w{n}")) for n, s in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sorted(order) == ["A"] * 30 + ["B"] * 30
    for end in range(1, 61):
        prefix = order[:end]
        assert abs(prefix.count("A") - prefix.count("B")) <= 3, order  # at most one claim per racing worker
    for store in stores:
        store.close()


# -- cancel and delete -------------------------------------------------------------------------------


def cancel(store: TaskStore, task_id: str, key: str = "A") -> tuple[object, object]:
    return asyncio.run(store.cancel(task_id, key, "cancelled"))


def test_cancel_a_waiting_task_ends_it_at_once(store: TaskStore, clock: ManualClock) -> None:
    [task_id] = add(store, clock, "A")
    before, after = cancel(store, task_id)
    assert before.status is Status.WAIT  # type: ignore[attr-defined]
    assert (after.status, after.reason, after.message) == (Status.FAIL, Reason.CANCELLED, "cancelled")  # type: ignore[attr-defined]
    assert store.claim("w", 8, lease_seconds=60) == []
    assert cancel(store, task_id)[1] == after  # again: nothing changes


def test_cancel_a_running_task_takes_its_lease(store: TaskStore, clock: ManualClock) -> None:
    add(store, clock, "A", 3)
    batch = store.claim("w", 8, lease_seconds=60)
    victim = batch[1]
    _, after = cancel(store, victim.task.task_id)
    assert after.status is Status.FAIL  # type: ignore[attr-defined]
    assert not store.heartbeat(victim.task.task_id, victim.token, 60)  # its worker finds out at once
    assert not store.complete(victim.task.task_id, victim.token, ["late.png"])
    assert not store.fail(victim.task.task_id, victim.token, "late", Reason.INTERNAL)
    for other in (batch[0], batch[2]):  # the rest of the batch is unharmed
        assert store.heartbeat(other.task.task_id, other.token, 60)
        assert store.complete(other.task.task_id, other.token, ["ok.png"])
    task = get(store, victim.task.task_id)
    assert (task.status, task.reason, task.result_keys) == (Status.FAIL, Reason.CANCELLED, ())


@pytest.mark.parametrize("outcome", ["complete", "fail"])
def test_cancel_a_finished_task_changes_nothing(store: TaskStore, clock: ManualClock, outcome: str) -> None:
    [task_id] = add(store, clock, "A")
    [claim] = store.claim("w", 1, lease_seconds=60)
    if outcome == "complete":
        assert store.complete(task_id, claim.token, ["a.png"])
    else:
        assert store.fail(task_id, claim.token, "out of memory", Reason.OUT_OF_MEMORY)
    before, after = cancel(store, task_id)
    assert before == after == get(store, task_id)
    assert after.reason is not Reason.CANCELLED  # type: ignore[attr-defined]


def test_another_keys_task_cannot_be_cancelled_or_deleted(store: TaskStore, clock: ManualClock) -> None:
    [task_id] = add(store, clock, "A")
    assert cancel(store, task_id, key="B") == (None, None)
    assert cancel(store, new_task_id()) == (None, None)
    assert get(store, task_id).status is Status.WAIT
    cancel(store, task_id)
    assert not asyncio.run(store.delete_task(task_id, "B"))
    assert get(store, task_id) is not None


def test_only_finished_tasks_can_be_deleted(store: TaskStore, clock: ManualClock) -> None:
    done, running, waiting = add(store, clock, "A", 3)
    [first] = store.claim("w", 1, lease_seconds=60)
    assert first.task.task_id == done and store.complete(done, first.token, [])
    assert store.claim("w", 1, lease_seconds=60)[0].task.task_id == running
    assert not asyncio.run(store.delete_task(running, "A"))
    assert not asyncio.run(store.delete_task(waiting, "A"))
    assert asyncio.run(store.delete_task(done, "A"))
    assert get(store, done) is None
    assert not asyncio.run(store.delete_task(done, "A"))  # once gone, gone
    assert get(store, running).status is Status.RUN and get(store, waiting).status is Status.WAIT


# -- queue positions ---------------------------------------------------------------------------------


def ahead(store: TaskStore, task_id: str) -> int:
    return asyncio.run(store.tasks_ahead(get(store, task_id)))


def test_a_waiting_tasks_position_follows_the_fair_order(store: TaskStore, clock: ManualClock) -> None:
    burst = add(store, clock, "A", 20)
    [lonely] = add(store, clock, "B")
    assert ahead(store, lonely) == 0
    assert ahead(store, burst[0]) == 0
    assert ahead(store, burst[9]) == 10  # nine of A's own, and B's
    store.claim("w", 4, lease_seconds=60)  # B's and three of A's
    assert ahead(store, burst[9]) == 6


def test_under_fifo_the_position_counts_every_older_waiting_task(backend: Backend, clock: ManualClock) -> None:
    store = open_store(backend.url, clock, scheduling=Scheduling(SchedulingPolicy.FIFO))
    add(store, clock, "A", 20)
    [lonely] = add(store, clock, "B")
    assert ahead(store, lonely) == 20
    store.close()


def test_waiting_tasks_are_counted_by_weight_for_the_metrics(store: TaskStore, clock: ManualClock) -> None:
    add(store, clock, "A", 3, weight=2.0)
    add(store, clock, "B", 2)
    add(store, clock, "C", 1)
    assert store.waiting_by_weight() == {2.0: (1, 3), 1.0: (2, 3)}
