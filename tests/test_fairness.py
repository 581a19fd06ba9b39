"""The fair order and model affinity as a pure policy (store/fairness.py), on simulated queues.

The store's own tests (test_scheduling.py) check that claims follow this order on SQLite and
PostgreSQL; here the policy is driven claim by claim by a small simulator, so its properties (shares
by weight, the starvation bound, the affinity bound) can be checked over many random workloads.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from aigc_image.store.fairness import (
    Affinity,
    Backlog,
    Head,
    Tenant,
    fair_order,
    fill,
    model_of,
    starting_vtime,
    tasks_ahead,
    work,
)
from aigc_image.tasks import TaskSpec


@dataclass
class Task:
    key: str
    model: str
    created: float
    work: float = 1.0

    @property
    def batch_key(self) -> str:
        return f"{self.model}|64x64"


@dataclass
class Queue:
    """Waiting tasks and each key's share, claimed as store.claim does: the first head of
    ``fair_order``, then ``fill``, each key charged its tasks' work over its weight."""

    weights: dict[str, float] = field(default_factory=dict)
    waiting: list[Task] = field(default_factory=list)
    vtimes: dict[str, float] = field(default_factory=dict)

    def create(self, task: Task) -> None:
        if not any(t.key == task.key for t in self.waiting):  # the key becomes active
            active = [self.vtimes[t.key] for t in self.waiting]
            self.vtimes[task.key] = starting_vtime(
                self.vtimes.get(task.key), min(active, default=None), max(self.vtimes.values(), default=None)
            )
        self.waiting.append(task)

    def heads(self) -> list[Head]:
        groups: dict[tuple[str, str], list[Task]] = {}
        for task in self.waiting:
            groups.setdefault((task.key, task.batch_key), []).append(task)
        return [
            Head(key, batch_key, min(t.created for t in tasks), len(tasks), sum(t.work for t in tasks))
            for (key, batch_key), tasks in groups.items()
        ]

    def tenants(self) -> dict[str, Tenant]:
        return {key: Tenant(key, self.weights.get(key, 1.0), vtime) for key, vtime in self.vtimes.items()}

    def claim(self, limit: int, affinity: Affinity | None = None) -> list[Task]:
        heads = self.heads()
        order = fair_order(heads, self.tenants(), affinity) if affinity else fair_order(heads, self.tenants())
        if not order:
            return []
        first = self._take(order[0].secret_id, order[0].batch_key, 1)
        taken = list(first)
        for key, count in fill(heads, order[0].batch_key, limit - 1, self.tenants(), Counter({first[0].key: 1})):
            taken += self._take(key, order[0].batch_key, count)
        for task in taken:
            self.vtimes[task.key] += task.work / self.weights.get(task.key, 1.0)
        return taken

    def _take(self, key: str, batch_key: str, count: int) -> list[Task]:
        mine = sorted((t for t in self.waiting if t.key == key and t.batch_key == batch_key), key=lambda t: t.created)
        for task in mine[:count]:
            self.waiting.remove(task)
        return mine[:count]


def burst(queue: Queue, key: str, count: int, start: float = 0.0, model: str = "m:1") -> None:
    for index in range(count):
        queue.create(Task(key, model, start + index * 0.001))


# -- the fair order ---------------------------------------------------------------------------------


def test_a_key_with_one_task_rides_in_the_next_batch_of_a_key_with_many() -> None:
    queue = Queue()
    burst(queue, "A", 60)
    queue.create(Task("B", "m:1", 1.0))
    first = queue.claim(8)
    assert [t.key for t in first].count("B") == 1 and first[0].key == "A"  # A was first: it starts the batch


def test_without_batching_one_task_waits_for_one_of_the_burst() -> None:
    queue = Queue()
    burst(queue, "A", 60)
    queue.create(Task("B", "m:1", 1.0))
    assert [queue.claim(1)[0].key for _ in range(3)] == ["A", "B", "A"]


def test_two_busy_keys_interleave_and_stay_oldest_first_within_each() -> None:
    queue = Queue()
    burst(queue, "A", 10)
    burst(queue, "B", 10, start=0.5)
    claimed = [queue.claim(1)[0] for _ in range(20)]
    assert [t.key for t in claimed] == ["A", "B"] * 10
    for key in "AB":
        created = [t.created for t in claimed if t.key == key]
        assert created == sorted(created)


def test_a_key_of_weight_two_gets_twice_the_work_under_contention() -> None:
    queue = Queue(weights={"A": 2.0, "B": 1.0})
    burst(queue, "A", 100)
    burst(queue, "B", 100)
    shares = Counter(queue.claim(1)[0].key for _ in range(60))
    assert shares == {"A": 40, "B": 20}


def test_weights_divide_work_not_task_counts() -> None:
    queue = Queue()
    for index in range(50):
        queue.create(Task("big", "m:1", index, work=4.0))
        queue.create(Task("small", "m:1", index, work=1.0))
    shares = Counter()
    for _ in range(25):
        [task] = queue.claim(1)
        shares[task.key] += task.work
    assert abs(shares["big"] - shares["small"]) <= 4.0  # equal work, give or take one of the big tasks


def test_an_idle_key_banks_no_credit_and_a_busy_one_keeps_no_debt() -> None:
    queue = Queue()
    burst(queue, "A", 30)
    for _ in range(30):
        queue.claim(1)  # A alone: its virtual time runs up to 30
    burst(queue, "A", 10, start=100)
    burst(queue, "B", 10, start=100.5)  # B arrives: it starts even with A, not 30 units ahead of it
    assert [queue.claim(1)[0].key for _ in range(6)] == ["A", "B"] * 3


def test_starting_vtime() -> None:
    assert starting_vtime(None, None, None) == 0.0  # the very first key
    assert starting_vtime(None, 5.0, 9.0) == 5.0  # the least of the active keys
    assert starting_vtime(7.0, 5.0, 9.0) == 7.0  # never below its own
    assert starting_vtime(2.0, None, 9.0) == 9.0  # nobody active: even with the latest


@settings(max_examples=300, deadline=None)
@given(
    weights=st.lists(st.sampled_from([0.5, 1.0, 2.0, 3.0]), min_size=2, max_size=5),
    arrivals=st.lists(st.tuples(st.integers(0, 4), st.integers(1, 20), st.sampled_from([1.0, 2.0, 4.0])), max_size=30),
)
def test_whatever_the_others_send_a_key_is_served_within_a_bounded_number_of_claims(
    weights: list[float], arrivals: list[tuple[int, int, float]]
) -> None:
    """The starvation bound. A key k that becomes active is served before any other key j has had
    more than ⌊(V_k − V_j) · w_j / least task work⌋ + 1 claims (each claim of j moves V_j up by at
    least that work over w_j, and j is chosen before k only while V_j ≤ V_k); k starts at the least
    virtual time of the active keys, or above it by at most one claim's charge (what it received
    beyond its share before it went idle). And while keys wait, their virtual times stay within one
    claim's charge of each other: how much one key sends does not change when the others are served."""
    keys = [f"k{n}" for n in range(len(weights))]
    queue = Queue(weights=dict(zip(keys, weights, strict=True)))
    burst(queue, keys[0], 5)
    now, least_work, charge = 1.0, 1.0, 4.0 / min(weights)  # the most one claim of one task can charge
    for key_index, count, task_work in arrivals:
        key = keys[key_index % len(keys)]
        was_active = any(t.key == key for t in queue.waiting)
        others = {t.key for t in queue.waiting} - {key}
        for _ in range(count):
            now += 0.001
            queue.create(Task(key, "m:1", now, task_work))
        if not was_active and others:
            least = min(queue.vtimes[k] for k in others)
            assert queue.vtimes[key] <= least + charge + 1e-9
            turns = {j: math.floor((queue.vtimes[key] - queue.vtimes[j]) * queue.weights[j] / least_work + 1e-9) + 1
                     for j in others if queue.vtimes[j] <= queue.vtimes[key]}  # fmt: skip
            served = [queue.claim(1)[0].key for _ in range(sum(turns.values()) + 1)]
            assert key in served, (key, served, turns)
            before = Counter(served[: served.index(key)])
            assert all(before[j] <= turns.get(j, 0) for j in before), (before, turns)
        else:
            queue.claim(1)
        spread = [queue.vtimes[k] for k in {t.key for t in queue.waiting}]
        if len(spread) > 1:
            assert max(spread) - min(spread) <= charge + 1e-9


# -- batches -----------------------------------------------------------------------------------------


def test_fill_gives_each_place_to_the_least_served_key_of_the_batch_key() -> None:
    heads = [Head("A", "m|x", 0.0, 10, 10.0), Head("B", "m|x", 1.0, 2, 2.0), Head("C", "m|y", 0.0, 5, 5.0)]
    tenants = {"A": Tenant("A", 1.0, 0.0), "B": Tenant("B", 1.0, 0.0), "C": Tenant("C", 1.0, 0.0)}
    assert fill(heads, "m|x", 7, tenants, {"A": 1}) == [("B", 2), ("A", 5)]  # C's tasks do not fit the batch


def test_the_admission_window_fills_in_fair_order_too() -> None:
    heads = [Head("A", "m|x", 0.0, 10, 10.0), Head("B", "m|x", 1.0, 10, 10.0)]
    tenants = {"A": Tenant("A", 1.0, 3.0), "B": Tenant("B", 1.0, 0.0)}
    assert fill(heads, "m|x", 5, tenants, {}) == [("B", 4), ("A", 1)]  # B catches up, then they alternate


# -- model affinity ----------------------------------------------------------------------------------


def swaps(models: list[str]) -> int:
    return sum(1 for a, b in itertools.pairwise(models) if a != b)


def test_a_key_alternating_two_models_does_not_make_its_worker_switch_at_every_task() -> None:
    queue = Queue()
    for index in range(40):
        queue.create(Task("A", "x:1" if index % 2 == 0 else "y:1", index * 0.01))
    loaded: frozenset[str] = frozenset()
    ran = []
    for step in range(40):
        [task] = queue.claim(1, Affinity(loaded, now=1.0 + step * 0.1, wait=10.0))
        loaded = frozenset({task.model})  # worker.max_loaded_models = 1
        ran.append(task.model)
    assert swaps(ran) == 1
    without = Queue()
    for index in range(40):
        without.create(Task("A", "x:1" if index % 2 == 0 else "y:1", index * 0.01))
    assert swaps([without.claim(1)[0].model for _ in range(40)]) == 39  # the first-come order


def test_two_busy_keys_on_two_models_swap_once_per_affinity_wait_and_share_equally() -> None:
    """Both keys' backlogs are older than affinity_wait, so age alone would let the fair order
    alternate them (a swap per task); counting from the worker's last swap keeps it on one model for
    affinity_wait, then the fair order decides again."""
    queue = Queue()
    for index in range(200):
        queue.create(Task("A", "x:1", index * 0.001))
        queue.create(Task("B", "y:1", index * 0.001))
    loaded, since, ran = frozenset({"x:1"}), 0.0, []
    for second in range(1, 121):  # a task a second for two minutes
        [task] = queue.claim(1, Affinity(loaded, now=float(second), wait=10.0, since=since))
        if task.model not in loaded:
            loaded, since = frozenset({task.model}), float(second)
        ran.append(task)
    assert swaps([t.model for t in ran]) <= 12  # one per 10 s at most
    shares = Counter(t.key for t in ran)
    assert abs(shares["A"] - shares["B"]) <= 10  # still fair, to within one affinity_wait of work
    plain = Queue()
    for index in range(200):
        plain.create(Task("A", "x:1", index * 0.001))
        plain.create(Task("B", "y:1", index * 0.001))
    assert swaps([plain.claim(1)[0].model for _ in range(120)]) == 119


def test_a_task_for_another_model_waits_at_most_affinity_wait_while_the_loaded_model_has_work() -> None:
    queue = Queue()
    queue.create(Task("B", "y:1", 0.0))
    loaded = frozenset({"x:1"})
    now = 0.0
    while True:
        now += 1.0
        queue.create(Task("A", "x:1", now))  # a steady stream for the loaded model
        [task] = queue.claim(1, Affinity(loaded, now=now, wait=10.0))
        if task.model == "y:1":
            break
    assert now == 10.0  # skipped while it had waited less than 10 s, taken as soon as it had not


def test_a_head_is_not_deferred_when_the_worker_has_nothing_for_its_loaded_models() -> None:
    head = Head("A", "y:1|64x64", 0.0, 1, 1.0)
    affinity = Affinity(frozenset({"x:1"}), now=1.0, wait=10.0)
    assert fair_order([head], {}, affinity) == [head]  # idle beats waiting


def test_a_model_loaded_on_another_idle_worker_is_left_to_it_until_affinity_wait() -> None:
    head = Head("A", "y:1|64x64", 0.0, 1, 1.0)
    assert fair_order([head], {}, Affinity(frozenset(), now=5.0, wait=10.0, elsewhere=frozenset({"y:1"}))) == []
    assert fair_order([head], {}, Affinity(frozenset(), now=10.0, wait=10.0, elsewhere=frozenset({"y:1"}))) == [head]


def test_within_a_key_a_task_is_never_overtaken_by_one_created_affinity_wait_after_it() -> None:
    old_other = Head("A", "y:1|64x64", 0.0, 1, 1.0)
    young_loaded = Head("A", "x:1|64x64", 10.5, 1, 1.0)
    less_young = Head("A", "x:1|64x64", 9.5, 1, 1.0)
    affinity = Affinity(frozenset({"x:1"}), now=11.0, wait=10.0)
    assert fair_order([old_other, young_loaded], {}, affinity)[0] is old_other
    assert fair_order([old_other, less_young], {}, affinity)[0] is less_young


def test_affinity_wait_zero_is_the_plain_fair_order() -> None:
    queue = Queue()
    for index in range(10):
        queue.create(Task("A", "x:1" if index % 2 == 0 else "y:1", index))
    ran = [queue.claim(1, Affinity(frozenset({"y:1"}), now=10.0, wait=0.0))[0].model for _ in range(10)]
    assert swaps(ran) == 9


# -- queue positions, work ---------------------------------------------------------------------------


def test_tasks_ahead_counts_the_own_keys_older_tasks_and_the_others_turns_before_it() -> None:
    a = Backlog("A", count=60, work=60.0, vtime=0.0)
    b = Backlog("B", count=1, work=1.0, vtime=0.0)
    assert tasks_ahead(b, (0, 0.0), [a, b]) == 0  # B's one task is next (it rides in A's next batch)
    assert tasks_ahead(a, (59, 59.0), [a, b]) == 60  # A's last: all of its own, and B's
    assert tasks_ahead(a, (3, 3.0), [a, b]) == 4
    heavy = Backlog("H", count=10, work=10.0, weight=2.0, vtime=0.0)
    assert tasks_ahead(b, (0, 0.0), [heavy, b]) == 0
    light = Backlog("L", count=10, work=10.0, weight=1.0, vtime=0.0)
    assert tasks_ahead(light, (4, 4.0), [heavy, light]) == 4 + 8  # weight 2: two of H's for each of L's


def test_work_is_images_times_steps_times_megapixels() -> None:
    spec = TaskSpec("m", "1", "p", "", 2, "png", 1024, 1024, 30, None)
    assert math.isclose(work(spec), 2 * 30 * 1.048576)
    assert model_of(spec.batch_key) == "m:1"
