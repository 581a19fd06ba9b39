"""The task store: every operation written once, over a small dialect object per database.

The SQL is in queries.sql, by name. A dialect (store/sqlite.py, store/postgres.py) knows only
what differs between databases: how to connect and open a transaction, how a lost connection
looks, how idle workers are woken, and how migrations are recorded. Every call that the API
makes from its event loop runs in a thread, so a slow disk or a locked database never stalls
request handling.

Creates are group-committed: creates that arrive while a commit is in flight form the next
batch, one transaction for all of them. A create that cannot be stored (a row the database
refuses) fails alone: the batch is then retried one create at a time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections import Counter
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from aigc_image.clock import Clock
from aigc_image.config import SchedulingPolicy
from aigc_image.errors import Reason
from aigc_image.store import fairness
from aigc_image.store.base import ALIVE_WITHIN, DefaultModelRecord, StoreUnavailable, WorkerRecord, WorkerState
from aigc_image.store.creates import fingerprint_keys, plan_creates
from aigc_image.store.fairness import UNLIMITED, Affinity, Backlog, FetchRoom, Head, Scheduling, Tenant
from aigc_image.store.queries import queries
from aigc_image.tasks import Claim, NewTask, Status, Task, TaskSpec, has_references

log = logging.getLogger(__name__)


class Dialect(Protocol):
    name: str  # "sqlite" or "postgresql": picks its queries and migrations

    def transaction(self, write: bool = True) -> AbstractContextManager[Any]:
        """One transaction; yields a connection with ``execute(sql, params)``. An outage raises
        StoreUnavailable (and the next transaction reconnects)."""
        ...

    def execute_many(self, connection: Any, sql: str, rows: Sequence[dict[str, Any]]) -> None: ...

    def wake(self) -> None:
        """Tell idle workers that tasks may be claimable (after the commit that made them so)."""
        ...

    def listen(self) -> None:
        """Start receiving wake-ups (before looking for work, so none is missed)."""
        ...

    def wait_for_work(self, timeout: float) -> None: ...

    def interrupt_wait(self) -> None:
        """End this process's ``wait_for_work`` now, or its next one at once (from another thread)."""
        ...

    def migrate(self) -> None: ...

    def schema_version(self) -> int: ...

    def close(self) -> None: ...


@dataclass
class _PendingCreate:
    task: NewTask
    max_active: int
    future: asyncio.Future[str]


class SqlStore:
    def __init__(
        self, dialect: Dialect, clock: Clock, max_attempts: int = 3, scheduling: Scheduling | None = None
    ) -> None:
        self.dialect = dialect
        self._sql = queries(dialect.name)
        self._clock = clock
        self.max_attempts = max_attempts
        self.scheduling = scheduling or Scheduling()
        self._pending: list[_PendingCreate] = []
        self._flusher: asyncio.Task[None] | None = None

    def schema_version(self) -> int:
        return self.dialect.schema_version()

    def _run(self, connection: Any, name: str, **values: Any) -> Any:
        return connection.execute(self._sql[name], values)

    # -- API side (async; the work runs in a thread) -------------------------------------------

    async def create(self, task: NewTask, max_active_per_key: int = 0) -> str:
        """Insert a WAIT task (or find the one a replay made) and return its id once committed."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending.append(_PendingCreate(task, max_active_per_key, future))
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_creates())
        return await future

    async def _flush_creates(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                outcomes = await asyncio.to_thread(self._insert, [(p.task, p.max_active) for p in batch])
                for pending, outcome in zip(batch, outcomes, strict=True):
                    if pending.future.done():
                        continue
                    if isinstance(outcome, BaseException):
                        pending.future.set_exception(outcome)
                    else:
                        pending.future.set_result(outcome)
        finally:
            self._flusher = None

    def _insert(self, batch: list[tuple[NewTask, int]]) -> list[str | BaseException]:
        """Each create's task id or error: all in one transaction, or, if the database refuses
        that, one create at a time, so one bad row fails only its own request."""
        try:
            outcomes = self._insert_batch(batch)
        except StoreUnavailable as exc:
            return [exc] * len(batch)
        except Exception as exc:
            if len(batch) == 1:
                log.warning("a create was refused by the database: %s: %s", type(exc).__name__, exc)
                return [exc]
            outcomes = [outcome for one in batch for outcome in self._insert([one])]
        self.dialect.wake()
        return outcomes

    def _insert_batch(self, batch: list[tuple[NewTask, int]]) -> list[str | BaseException]:
        with self.dialect.transaction() as db:
            self._run(db, "lock_keys", keys=sorted({task.secret_id for task, _ in batch}))
            self._record_keys(db, {task.secret_id: task.weight for task, _ in batch})
            now = self._clock.now()
            fingerprints = [key for task, _ in batch for key in fingerprint_keys(task, now)]
            stored: dict[str, tuple[str, float]] = {}
            if fingerprints:
                listed: Any = json.dumps(fingerprints) if self.dialect.name == "sqlite" else fingerprints
                rows = self._run(db, "stored_fingerprints", fingerprints=listed).fetchall()
                stored = {row["request_fingerprint"]: (row["task_id"], row["created_at"]) for row in rows}

            def count_active(secret_id: str) -> int:
                return int(self._run(db, "count_active", secret_id=secret_id).fetchone()["n"])

            plan = plan_creates(batch, stored, count_active, now)
            if plan.rows:
                self.dialect.execute_many(db, self._sql["insert_task"], plan.rows)
            return list(plan.outcomes)

    def _record_keys(self, db: Any, weights: dict[str, float]) -> None:
        """Record each creating key's weight; a key with nothing waiting or running starts at the
        virtual clock (fairness.starting_vtime). Before its new tasks are inserted, so that "active"
        means what it had before this create."""
        clock = None
        for secret_id in sorted(weights):
            state = self._run(db, "key_state", secret_id=secret_id).fetchone()
            vtime = state["vtime"]
            if state["active"] and vtime is not None:
                if state["weight"] == weights[secret_id]:
                    continue
            else:
                clock = clock or self._run(db, "virtual_clock").fetchone()
                vtime = fairness.starting_vtime(vtime, clock["active"], clock["latest"])
            self._run(db, "set_key_state", secret_id=secret_id, weight=weights[secret_id], vtime=vtime)

    async def get(self, task_id: str) -> Task | None:
        return await asyncio.to_thread(self.get_now, task_id)

    def get_now(self, task_id: str) -> Task | None:
        with self.dialect.transaction(write=False) as db:
            row = self._run(db, "get_task", task_id=task_id).fetchone()
        return task_from_row(row) if row else None

    async def list_tasks(
        self, secret_id: str, status: Status | None, task_id: str | None, offset: int, limit: int
    ) -> tuple[int, list[Task]]:
        """A key's tasks, newest first, optionally only one status or one id: (how many match, one page)."""
        return await asyncio.to_thread(self._list_tasks, secret_id, status, task_id, offset, limit)

    def _list_tasks(
        self, secret_id: str, status: Status | None, task_id: str | None, offset: int, limit: int
    ) -> tuple[int, list[Task]]:
        where = {"secret_id": secret_id, "status": status.value if status else None, "task_id": task_id}
        with self.dialect.transaction(write=False) as db:
            total = int(self._run(db, "count_tasks", **where).fetchone()["n"])
            rows = self._run(db, "list_tasks", **where, limit=limit, offset=offset).fetchall()
        return total, [task_from_row(row) for row in rows]

    def queue_counts(self) -> dict[Status, int]:
        """How many tasks are waiting and running, across every process."""
        with self.dialect.transaction(write=False) as db:
            rows = self._run(db, "count_by_status").fetchall()
        counts = {Status.WAIT: 0, Status.RUN: 0}
        counts.update({Status(row["status"]): int(row["n"]) for row in rows})
        return counts

    def recent_failures(self, limit: int) -> list[Task]:
        with self.dialect.transaction(write=False) as db:
            return [task_from_row(row) for row in self._run(db, "recent_failures", limit=limit).fetchall()]

    # -- worker side ----------------------------------------------------------------------------

    def claim(
        self,
        worker_id: str,
        limit: int,
        lease_seconds: float,
        batch_key: str | None = None,
        loaded: Sequence[str] = (),
        loaded_since: float = 0.0,
        fetch: FetchRoom = UNLIMITED,
    ) -> list[Claim]:
        """Lease up to ``limit`` claimable tasks that share one batch key, in one transaction: by
        default the fair order (store/fairness.py; ``loaded``: the claiming worker's models, and
        since when it has had them, for affinity), with ``worker.scheduling = "fifo"`` the first
        queued task and the first queued that share its key. With ``batch_key``, up to ``limit`` more
        of that key. Tasks with reference images: no more than ``fetch`` leaves room for, and one
        key's only in a batch. A task whose last attempt never ended comes first, and alone: if it
        killed its worker, it cannot take a batch with it."""
        self.dialect.listen()  # before looking: a task created after this look still wakes us
        now = self._clock.now()
        token = secrets.token_hex(16)
        values = {"now": now, "max_attempts": self.max_attempts, "limit": limit, "worker": worker_id,
                  "token": token, "expires": now + lease_seconds}  # fmt: skip
        fair = self.scheduling.policy is SchedulingPolicy.FAIR
        with self.dialect.transaction() as db:
            tenants = self._tenants(db)
            if batch_key is None and (orphan := self._run(db, "take_over", **values).fetchone()):
                tasks, alone = [task_from_row(orphan)], True
            else:
                models = (frozenset(loaded), loaded_since)
                tasks, alone = self._claim_ordered(db, values, batch_key, models, tenants, fetch), False
            if fair and tasks:
                self._charge(db, tasks, tenants)
                self._run(db, "mark_busy", worker=worker_id)
        tasks.sort(key=lambda t: (t.queued_at, t.task_id))
        return [Claim(task, token, alone, fairness.weight_of(task.secret_id, tenants)) for task in tasks]

    def _claim_ordered(
        self,
        db: Any,
        values: dict[str, Any],
        batch_key: str | None,
        models: tuple[frozenset[str], float],
        tenants: dict[str, Tenant],
        fetch: FetchRoom,
    ) -> list[Task]:
        """A batch in the store's order: its first task from the first head of the order whose tasks
        can be locked (on PostgreSQL another worker may hold them right now), its other places from
        the same batch key (``_fill``). With ``batch_key``: only the filling."""
        heads = [
            Head(row["secret_id"], row["batch_key"], row["oldest"], int(row["n"]), float(row["work"]))
            for row in self._run(db, "claimable_heads", now=values["now"]).fetchall()
            if batch_key is None or row["batch_key"] == batch_key
        ]
        heads = [head for head in heads if fetch.admits(head)]
        if batch_key is not None:
            return self._fill(db, values, heads, batch_key, tenants, fetch, [])
        fair = self.scheduling.policy is SchedulingPolicy.FAIR
        if fair:
            wait, (loaded, since) = self.scheduling.affinity_wait, models
            elsewhere = self._idle_elsewhere(db, values) if wait and heads else frozenset()
            order = fairness.fair_order(heads, tenants, Affinity(loaded, values["now"], wait, elsewhere, since))
        else:
            order = fairness.fifo_order(heads)
        for head in order:
            if not fair and not head.references:  # first come, whoever sent it: its batch key's first queued
                if taken := self._claim_key(db, values, head.batch_key, values["limit"]):
                    return taken
            elif first := self._claim_group(db, values, head.secret_id, head.batch_key, 1):
                # a batch with references holds one key's tasks: none waits for another key's image server
                room = fetch.for_batch(head.secret_id, 0) if head.references else fetch
                return self._fill(db, values, heads, head.batch_key, tenants, room, first)
        return []

    def _fill(
        self,
        db: Any,
        values: dict[str, Any],
        heads: list[Head],
        batch_key: str,
        tenants: dict[str, Tenant],
        fetch: FetchRoom,
        taken: list[Task],
    ) -> list[Task]:
        """``taken`` and the batch's other places, from tasks of ``batch_key``: in fair order
        (``fairness.fill``), or first queued first; tasks with references as ``fetch`` leaves room."""
        room = values["limit"] - len(taken)
        if room <= 0:
            return taken
        if self.scheduling.policy is SchedulingPolicy.FIFO and not has_references(batch_key):
            return taken + self._claim_key(db, values, batch_key, room)
        counts = Counter(task.secret_id for task in taken)
        for secret_id, count in fairness.fill(heads, batch_key, room, tenants, counts, fetch):
            taken += self._claim_group(db, values, secret_id, batch_key, count)
        return taken

    def _claim_key(self, db: Any, values: dict[str, Any], batch_key: str, limit: int) -> list[Task]:
        group = values | {"key": batch_key, "limit": limit}
        return [task_from_row(row) for row in self._run(db, "claim_key", **group).fetchall()]

    def _claim_group(self, db: Any, values: dict[str, Any], secret_id: str, batch_key: str, limit: int) -> list[Task]:
        group = values | {"secret_id": secret_id, "key": batch_key, "limit": limit}
        return [task_from_row(row) for row in self._run(db, "claim_group", **group).fetchall()]

    def _tenants(self, db: Any) -> dict[str, Tenant]:
        rows = self._run(db, "tenants").fetchall()
        return {row["secret_id"]: Tenant(row["secret_id"], row["weight"], row["vtime"]) for row in rows}

    def _idle_elsewhere(self, db: Any, values: dict[str, Any]) -> frozenset[str]:
        """The models loaded on the other workers that are alive and idle."""
        return frozenset(
            model
            for row in self._run(db, "list_workers").fetchall()
            if row["worker_id"] != values["worker"] and row["state"] == WorkerState.IDLE
            and values["now"] - row["seen_at"] <= ALIVE_WITHIN
            for model in json.loads(row["loaded"])
        )  # fmt: skip

    def _charge(self, db: Any, tasks: Sequence[Task], tenants: dict[str, Tenant]) -> None:
        """Each key pays the work of its claimed tasks over its weight (keys in order: no deadlock
        between two claims on PostgreSQL)."""
        owed: dict[str, float] = {}
        for task in tasks:
            owed[task.secret_id] = owed.get(task.secret_id, 0.0) + fairness.work(task.spec)
        start = 0.0
        if any(key not in tenants for key in owed):  # tasks stored before fair scheduling
            clock = self._run(db, "virtual_clock").fetchone()
            start = fairness.starting_vtime(None, clock["active"], clock["latest"])
        for secret_id in sorted(owed):
            self._run(db, "charge", secret_id=secret_id, work=owed[secret_id], start=start)

    def heartbeat(
        self, task_id: str, token: str, lease_seconds: float, progress: tuple[int, int] | None = None
    ) -> bool:
        """Renew the lease; ``progress`` (steps done, steps) is recorded for status queries."""
        expires = self._clock.now() + lease_seconds
        if progress is None:
            return self._leased("heartbeat", task_id, token, None, expires=expires)
        step, steps = progress
        return self._leased("heartbeat_with_progress", task_id, token, None, expires=expires, step=step, steps=steps)

    def complete(self, task_id: str, token: str, result_keys: Sequence[str]) -> bool:
        keys = json.dumps(list(result_keys))
        return self._leased("complete", task_id, token, Status.DONE, keys=keys, now=self._clock.now())

    def fail(self, task_id: str, token: str, message: str, reason: Reason, fetch_seconds: float = 0.0) -> bool:
        return self._leased(
            "fail", task_id, token, Status.FAIL, message=message, reason=reason.value, now=self._clock.now(),
            fetch_seconds=fetch_seconds,
        )  # fmt: skip

    def retry_later(
        self,
        task_id: str,
        token: str,
        retry_at: float,
        message: str,
        fetch_seconds: float = 0.0,
        requeue: bool = False,
    ) -> bool:
        """Back to WAIT after a transient failure, claimable again from ``retry_at``; ``fetch_seconds``
        (this attempt's fetching of reference images) is added to the task's. With ``requeue`` (its
        references could not be fetched) it goes behind the work queued meanwhile, and under the
        fair order its key pays its work once more."""
        with self.dialect.transaction() as db:
            row = self._run(
                db, "retry_later", task_id=task_id, token=token, retry_at=retry_at, message=message,
                fetch_seconds=fetch_seconds, requeue=requeue,
            ).fetchone()  # fmt: skip
            if row is not None and requeue and self.scheduling.policy is SchedulingPolicy.FAIR:
                self._run(db, "charge_again", secret_id=row["secret_id"], work=row["work"])
        return row is not None

    def release(self, task_id: str, token: str, fetch_seconds: float = 0.0) -> bool:
        """Hand a running task back to WAIT (a worker shutting down); the attempt is not counted, but
        ``fetch_seconds`` (its fetching of reference images) is added to the task's."""
        released = self._leased("release", task_id, token, None, fetch_seconds=fetch_seconds)
        if released:
            self.dialect.wake()  # another idle worker can take it at once
        return released

    def _leased(self, name: str, task_id: str, token: str, finished: Status | None, **values: Any) -> bool:
        """Apply a transition that only the lease holder may make. True if it changed the task;
        for a finish, also when this lease had already made it (a retry after an outage)."""
        with self.dialect.transaction() as db:
            if self._run(db, name, task_id=task_id, token=token, **values).rowcount == 1:
                return True
            if finished is None:
                return False
            confirm = {"task_id": task_id, "token": token, "status": finished.value}
            return self._run(db, "finished_by", **confirm).fetchone() is not None

    # -- the key's own actions: cancel, delete, queue position ----------------------------------

    async def cancel(self, task_id: str, secret_id: str, message: str) -> tuple[Task | None, Task | None]:
        """End a task of ``secret_id`` that is waiting or running: FAIL, reason ``cancelled``, its
        lease token cleared (its worker drops it at its next renewal). Returns the task as it was
        and as it is now; they are the same when there was nothing to cancel (None: no such task
        of this key)."""
        return await asyncio.to_thread(self._cancel, task_id, secret_id, message)

    def _cancel(self, task_id: str, secret_id: str, message: str) -> tuple[Task | None, Task | None]:
        with self.dialect.transaction() as db:
            row = self._run(db, "get_task_for_update", task_id=task_id).fetchone()
            if row is None or row["secret_id"] != secret_id:
                return None, None
            before = task_from_row(row)
            after = self._run(db, "cancel", task_id=task_id, secret_id=secret_id, message=message,
                              now=self._clock.now()).fetchone()  # fmt: skip
        return before, task_from_row(after) if after else before

    async def delete_task(self, task_id: str, secret_id: str) -> bool:
        """Delete a finished (DONE or FAIL) task's record; False if there is no such finished task."""
        return await asyncio.to_thread(self._delete_task, task_id, secret_id)

    def _delete_task(self, task_id: str, secret_id: str) -> bool:
        with self.dialect.transaction() as db:
            return int(self._run(db, "delete_task", task_id=task_id, secret_id=secret_id).rowcount) == 1

    async def tasks_ahead(self, task: Task) -> int:
        """About how many waiting tasks will be claimed before ``task`` (waiting), by the store's
        order: fairness.tasks_ahead for the fair order, the older waiting tasks for fifo."""
        return await asyncio.to_thread(self._tasks_ahead, task)

    def _tasks_ahead(self, task: Task) -> int:
        where = {"secret_id": task.secret_id, "queued_at": task.queued_at, "task_id": task.task_id}
        with self.dialect.transaction(write=False) as db:
            if self.scheduling.policy is SchedulingPolicy.FIFO:
                return int(self._run(db, "waiting_ahead", **where).fetchone()["n"])
            mine = self._run(db, "waiting_ahead_in_key", **where).fetchone()
            rows = self._run(db, "waiting_by_key").fetchall()
        floor = min((r["vtime"] for r in rows if r["vtime"] is not None), default=0.0)  # unrecorded keys: the least
        keys = [
            Backlog(
                r["secret_id"], int(r["n"]), float(r["work"]), r["weight"], floor if r["vtime"] is None else r["vtime"]
            )
            for r in rows
        ]
        own = next((key for key in keys if key.secret_id == task.secret_id), Backlog(task.secret_id, 0, 0.0))
        return fairness.tasks_ahead(own, (int(mine["n"]), float(mine["work"])), keys)

    def waiting_by_weight(self) -> dict[float, tuple[int, int]]:
        """Weight → (keys with tasks waiting, tasks waiting), for the metrics."""
        with self.dialect.transaction(write=False) as db:
            rows = self._run(db, "waiting_by_weight").fetchall()
        return {float(row["weight"]): (int(row["keys"]), int(row["n"])) for row in rows}

    def fail_exhausted(self) -> int:
        """FAIL tasks whose lease expired after their last allowed attempt; returns how many."""
        with self.dialect.transaction() as db:
            return int(self._run(db, "fail_exhausted", now=self._clock.now(), max_attempts=self.max_attempts).rowcount)

    def expire_leases_of(self, worker_id: str) -> int:
        """End the leases of a worker known to be dead, so its tasks run again at once."""
        with self.dialect.transaction() as db:
            expired = int(self._run(db, "expire_leases_of", now=self._clock.now(), worker=worker_id).rowcount)
        if expired:
            self.dialect.wake()
        return expired

    def wait_for_work(self, timeout: float) -> None:
        """Block until a task may be claimable, or ``timeout`` seconds pass, or ``interrupt_wait``."""
        self.dialect.wait_for_work(timeout)

    def interrupt_wait(self) -> None:
        """End ``wait_for_work`` now, or the next one at once: the worker has work of its own."""
        self.dialect.interrupt_wait()

    # -- workers ----------------------------------------------------------------------------------

    def record_worker(self, worker: WorkerRecord) -> None:
        """Insert or refresh a worker's row: what it runs on, has loaded, failed to load, is running."""
        with self.dialect.transaction() as db:
            self._run(
                db, "record_worker", worker_id=worker.worker_id, host=worker.host, device=worker.device,
                started_at=worker.started_at, seen_at=worker.seen_at, state=worker.state,
                loaded=json.dumps(worker.loaded), failed=json.dumps(worker.failed), running=json.dumps(worker.running),
            )  # fmt: skip

    def default_model(self) -> DefaultModelRecord | None:
        with self.dialect.transaction(write=False) as db:
            row = self._run(db, "default_model").fetchone()
        return _default_model_from_row(row) if row else None

    def record_default_model(self, record: DefaultModelRecord, replace: str) -> DefaultModelRecord:
        if replace not in ("none", "chosen", "any"):
            raise ValueError(f"replace must be none, chosen or any; got {replace!r}")
        with self.dialect.transaction() as db:
            self._run(
                db, "record_default_model", label=record.label, explicit=int(record.explicit), origin=record.origin,
                set_by=record.set_by, set_at=record.set_at, replace=replace,
            )  # fmt: skip
            return _default_model_from_row(self._run(db, "default_model").fetchone())

    def forget_worker(self, worker_id: str) -> None:
        with self.dialect.transaction() as db:
            self._run(db, "forget_worker", worker_id=worker_id)

    def workers(self, forget_before: float | None = None) -> list[WorkerRecord]:
        """Every worker's last record; rows not refreshed since ``forget_before`` are deleted first."""
        with self.dialect.transaction(write=forget_before is not None) as db:
            if forget_before is not None:
                self._run(db, "forget_workers_seen_before", cutoff=forget_before)
            rows = self._run(db, "list_workers").fetchall()
        return [
            WorkerRecord(
                worker_id=row["worker_id"],
                host=row["host"],
                device=row["device"],
                started_at=row["started_at"],
                seen_at=row["seen_at"],
                state=WorkerState(row["state"]),
                loaded=json.loads(row["loaded"]),
                failed=json.loads(row["failed"]),
                running=json.loads(row["running"]),
            )
            for row in rows
        ]

    # -- retention --------------------------------------------------------------------------------

    def finished_before(self, cutoff: float, limit: int) -> list[Task]:
        """DONE tasks finished before ``cutoff`` whose images are still stored."""
        with self.dialect.transaction(write=False) as db:
            rows = self._run(db, "finished_before", cutoff=cutoff, limit=limit).fetchall()
        return [task_from_row(row) for row in rows]

    def mark_results_purged(self, task_id: str) -> None:
        with self.dialect.transaction() as db:
            self._run(db, "mark_results_purged", task_id=task_id)

    def delete_finished_before(self, cutoff: float, limit: int) -> list[Task]:
        """Delete up to ``limit`` DONE/FAIL task records finished before ``cutoff``; returns them."""
        with self.dialect.transaction() as db:
            rows = self._run(db, "delete_finished_before", cutoff=cutoff, limit=limit).fetchall()
        return [task_from_row(row) for row in rows]

    def close(self) -> None:
        self.dialect.close()


def _default_model_from_row(row: Any) -> DefaultModelRecord:
    return DefaultModelRecord(row["label"], bool(row["explicit"]), row["origin"], row["set_by"], float(row["set_at"]))


def task_from_row(row: Any) -> Task:
    return Task(
        task_id=row["task_id"],
        secret_id=row["secret_id"],
        spec=TaskSpec.from_json(row["spec"]),
        status=Status(row["status"]),
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        attempts=row["attempts"],
        message=row["message"],
        reason=Reason(row["reason"]) if row["reason"] else None,
        result_keys=tuple(json.loads(row["result_keys"])),
        results_purged=bool(row["results_purged"]),
        step=row["step"],
        steps=row["steps"],
        queued_at=row["queued_at"],
        fetch_seconds=row["fetch_seconds"],
    )
