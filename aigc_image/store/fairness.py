"""The order in which waiting tasks are claimed: fair shares across keys, then model affinity. No I/O.

**Fair shares: start-time fair queuing over keys.** Each key (SecretId) has a virtual time: the
work it has been given, divided by its weight. A worker's next batch starts from the key with the
least virtual time among those with claimable tasks, and within a key from its oldest task. A
claim charges each key the work of the tasks it got (``work``: images × steps × megapixels) divided
by the key's weight, so a key of weight 2 gets twice the work of a key of weight 1 while both wait.
A key that had nothing waiting or running starts, when it creates a task, at the least virtual
time of the keys that do (``starting_vtime``): idle time banks no credit, and a key that was served
a lot while others were idle is not punished for it once they come back.

Why no task starves, whatever the others send: a key is chosen before another only while its
virtual time is not greater, and each claim moves the chosen key up by its batch's work over its
weight. A key that becomes active enters at the least virtual time, so it waits for at most one
batch of each other key; a key already waiting, for at most one batch of each plus what it
received beyond its share (scaled by their weights). A task then waits for the older tasks of its
own key, and affinity holds it back by at most ``affinity_wait``. docs/operations.md states the
bound; tests/test_fairness.py checks it on random workloads.

**Batches.** A batch shares one batch key (model, size, steps, ...). The chosen key gives its
oldest task; the batch's other places go to tasks of the same batch key in fair order too
(``fill``): each goes to the key with the least virtual time after what it already has in this
batch, so a key with one task rides in the next batch of a key with many.

**Model affinity** (``Affinity``): switching the model a worker has loaded costs seconds to
minutes. A head (a key's claimable tasks of one batch key) for a model the worker has not loaded
is skipped for ``affinity_wait`` seconds, counted from its oldest task's creation or from the
worker's last change of models, whichever is later, while either the worker has claimable work for
a model it has loaded, or the model is loaded on another worker that is alive and idle (which will
take it). Counting from the last change too is what keeps two busy keys on two models from making
the worker swap at every batch once both have waited long: after a swap, the worker stays with its
models for ``affinity_wait`` while it has work for them, then follows the fair order again. Within a
key, tasks for a loaded model go first unless a task for another model is more than
``affinity_wait`` older: a task is never overtaken by one of its key created more than
``affinity_wait`` after it, and a key alternating two models does not make its worker switch at
every batch. ``affinity_wait = 0`` turns affinity off.

**Reference images** (``FetchRoom``): a worker fetches a task's reference images before the task
holds its device, a few tasks at a time, so that one key's slow image server delays only that key's
tasks. A claim hands a worker no more tasks with references than it has room to fetch, in all and
for each key, and a batch of such tasks holds one key's tasks only (so that no task waits for
another key's server). A task whose fetch failed is retried behind the work queued meanwhile
(``Head.oldest`` is the time it was queued again) and its key pays its work once more.

**The first-come order** (``fifo_order``, ``worker.scheduling = "fifo"``): the first queued head
first, whoever sent it; no shares, no affinity.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from aigc_image.config import SchedulingPolicy
from aigc_image.tasks import TaskSpec, has_references


@dataclass(frozen=True)
class Scheduling:
    """How a store orders claims: ``fair`` (this module) or ``fifo`` (oldest task first, as before)."""

    policy: SchedulingPolicy = SchedulingPolicy.FAIR
    affinity_wait: float = 10.0  # seconds: as worker.affinity_wait


def work(spec: TaskSpec) -> float:
    """What a task costs a device, in megapixel-steps: images × denoising steps × megapixels.

    An estimate, but proportional to what dominates on every pipeline here (the denoiser runs once
    per step over every image's latents); guidance, the text encoders and decoding are not counted."""
    return spec.image_count * spec.steps * spec.width * spec.height / 1e6


def model_of(batch_key: str) -> str:
    """The model label (``Name:Version``) a batch key starts with (TaskSpec.batch_key)."""
    return batch_key.partition("|")[0]


@dataclass(frozen=True)
class Head:
    """The claimable tasks of one key that share one batch key."""

    secret_id: str
    batch_key: str
    oldest: float  # when the first queued of them was queued (created, or queued again after a failed fetch)
    count: int
    work: float  # their summed work

    @property
    def model(self) -> str:
        return model_of(self.batch_key)

    @property
    def references(self) -> bool:
        """Whether its tasks take reference images (fetched before they hold a device)."""
        return has_references(self.batch_key)

    @property
    def mean_work(self) -> float:
        return self.work / self.count if self.count else 0.0


@dataclass(frozen=True)
class Tenant:
    """A key's share: its weight (keys.toml) and its virtual time (work received / weight)."""

    secret_id: str
    weight: float = 1.0
    vtime: float = 0.0


@dataclass(frozen=True)
class Affinity:
    """What the claiming worker knows about models: see the module docstring."""

    loaded: frozenset[str]  # model labels the claiming worker has loaded
    now: float
    wait: float  # worker.affinity_wait
    elsewhere: frozenset[str] = field(default_factory=frozenset)  # loaded on other alive, idle workers
    since: float = 0.0  # when the claiming worker's loaded models last changed

    def defers(self, head: Head, loaded_work: bool) -> bool:
        """Whether ``head`` is skipped by this worker for now (``loaded_work``: whether it has any
        claimable work for a model it has loaded)."""
        if self.wait <= 0 or head.model in self.loaded or self.now - max(head.oldest, self.since) >= self.wait:
            return False
        return loaded_work or head.model in self.elsewhere

    def age(self, head: Head) -> float:
        """The creation time ``head`` is ordered by within its key: a loaded model's tasks count as
        ``wait`` seconds older."""
        return head.oldest - (self.wait if head.model in self.loaded else 0.0)


NO_AFFINITY = Affinity(frozenset(), now=0.0, wait=0.0)


@dataclass(frozen=True)
class FetchRoom:
    """How many more tasks with reference images the claiming worker may take: it fetches at most
    ``total`` tasks' references at once (``fetch.workers``), at most ``per_key`` of one key
    (``fetch.per_key``); ``fetching`` counts, by key, those it is fetching now. ``only``: a batch of
    that key's is being filled, and no other key's task may join it."""

    total: int
    per_key: int
    fetching: Mapping[str, int] = field(default_factory=dict)
    only: str | None = None

    @property
    def free(self) -> int:
        """How many more tasks with references it may take now, of any keys."""
        return max(0, self.total - sum(self.fetching.values()))

    def room(self, secret_id: str) -> int:
        """How many more tasks with references of ``secret_id`` it may take now."""
        if self.only is not None and secret_id != self.only:
            return 0
        return max(0, min(self.free, self.per_key - self.fetching.get(secret_id, 0)))

    def admits(self, head: Head) -> bool:
        return not head.references or self.room(head.secret_id) > 0

    def for_batch(self, secret_id: str, taken: int) -> FetchRoom:
        """The room left for a batch of ``secret_id``'s that already has ``taken`` tasks: only its key."""
        fetching = dict(self.fetching)
        fetching[secret_id] = fetching.get(secret_id, 0) + taken
        return FetchRoom(self.total, self.per_key, fetching, only=secret_id)


UNLIMITED = FetchRoom(total=1 << 30, per_key=1 << 30)  # a claim with no fetching worker behind it (tests, tools)


def starting_vtime(own: float | None, least_active: float | None, greatest: float | None) -> float:
    """The virtual time of a key that becomes active (had no task waiting or running): the least
    of the active keys' (no credit for idle time), never less than its own (no escape from what it
    received while others were active). With no key active, the greatest there is: whoever comes
    first after an idle period starts even with everyone else."""
    floor = least_active if least_active is not None else (greatest or 0.0)
    return floor if own is None else max(own, floor)


def _vtimes(heads: Iterable[Head], tenants: Mapping[str, Tenant]) -> dict[str, float]:
    """The virtual time of each key with heads; a key the store has no record of (tasks stored
    before fair scheduling) is taken to be at the least of the others'."""
    keys = {head.secret_id for head in heads}
    known = [tenants[key].vtime for key in keys if key in tenants]
    floor = min(known, default=0.0)
    return {key: tenants[key].vtime if key in tenants else floor for key in keys}


def weight_of(secret_id: str, tenants: Mapping[str, Tenant]) -> float:
    return tenants[secret_id].weight if secret_id in tenants else 1.0


def fair_order(heads: Sequence[Head], tenants: Mapping[str, Tenant], affinity: Affinity = NO_AFFINITY) -> list[Head]:
    """The heads a batch may start from, the first choice first. Keys by virtual time (then by their
    oldest task, then by id, so that ties go the same way everywhere); a key's heads by age
    (``Affinity.age``). The store takes the first whose tasks it can lock: on PostgreSQL another
    worker may hold the first one's at that moment."""
    loaded_work = any(head.model in affinity.loaded for head in heads)
    open_heads = [head for head in heads if not affinity.defers(head, loaded_work)]
    vtimes = _vtimes(open_heads, tenants)
    oldest: dict[str, float] = {}
    for head in open_heads:
        oldest[head.secret_id] = min(oldest.get(head.secret_id, math.inf), head.oldest)
    return sorted(
        open_heads,
        key=lambda h: (vtimes[h.secret_id], oldest[h.secret_id], h.secret_id, affinity.age(h), h.batch_key),
    )


def fifo_order(heads: Sequence[Head]) -> list[Head]:
    """The heads a batch may start from in the first-come order: the first queued first."""
    return sorted(heads, key=lambda h: (h.oldest, h.secret_id, h.batch_key))


def fill(
    heads: Sequence[Head],
    batch_key: str,
    room: int,
    tenants: Mapping[str, Tenant],
    taken: Mapping[str, int],
    fetch: FetchRoom = UNLIMITED,
) -> list[tuple[str, int]]:
    """How many more tasks of ``batch_key`` each key gives to fill ``room`` places of a batch, in
    fair order: place by place, to the key with the least virtual time counting what it already
    has in the batch (``taken``: tasks per key). Keys in the order they first get a place. Tasks
    with reference images: no more of a key than ``fetch`` has room for (``taken`` counted in it)."""
    candidates = [head for head in heads if head.batch_key == batch_key]
    vtimes = _vtimes(candidates, tenants)
    left = {head.secret_id: head.count - taken.get(head.secret_id, 0) for head in candidates}
    if has_references(batch_key):
        left = {key: min(n, fetch.room(key) - taken.get(key, 0)) for key, n in left.items()}
        room = min(room, fetch.free - sum(taken.values()))
    for head in candidates:
        vtimes[head.secret_id] += taken.get(head.secret_id, 0) * head.mean_work / weight_of(head.secret_id, tenants)
    oldest = {head.secret_id: head.oldest for head in candidates}
    given: dict[str, int] = {}
    for _ in range(room):
        waiting = [key for key, n in left.items() if n > 0]
        if not waiting:
            break
        key = min(waiting, key=lambda k: (vtimes[k], oldest[k], k))
        head = next(h for h in candidates if h.secret_id == key)
        given[key] = given.get(key, 0) + 1
        left[key] -= 1
        vtimes[key] += head.mean_work / weight_of(key, tenants)
    return list(given.items())


@dataclass(frozen=True)
class Backlog:
    """A key's waiting tasks, as counted for a queue position."""

    secret_id: str
    count: int
    work: float
    weight: float = 1.0
    vtime: float = 0.0


def tasks_ahead(own: Backlog, ahead_in_own_key: tuple[int, float], others: Sequence[Backlog]) -> int:
    """About how many waiting tasks will be claimed before a waiting task, by the fair order.

    ``own``: its key (the virtual time of its next claim); ``ahead_in_own_key``: how many of its
    key's waiting tasks are older, and their work. The task is reached when its key's virtual time
    has grown by that work over its weight, to ``reached``. Until then, each other key gets the
    tasks whose virtual start comes earlier: with its mean work per task, those whose start
    ``vtime + i × mean / weight`` is below ``reached``. An estimate: batching, affinity, retries and
    tasks created meanwhile move it."""
    count, ahead_work = ahead_in_own_key
    reached = own.vtime + ahead_work / own.weight
    before = count
    for other in others:
        if other.secret_id == own.secret_id or other.count == 0 or reached <= other.vtime:
            continue
        per_task = other.work / other.count / other.weight
        before += other.count if per_task <= 0 else min(other.count, math.ceil((reached - other.vtime) / per_task))
    return before
