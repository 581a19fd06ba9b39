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
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from aigc_image.clock import Clock
from aigc_image.errors import Reason
from aigc_image.store.base import StoreUnavailable, WorkerRecord, WorkerState
from aigc_image.store.creates import plan_creates
from aigc_image.store.queries import queries
from aigc_image.tasks import Claim, NewTask, Status, Task, TaskSpec

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

    def migrate(self) -> None: ...

    def schema_version(self) -> int: ...

    def close(self) -> None: ...


@dataclass
class _PendingCreate:
    task: NewTask
    max_active: int
    future: asyncio.Future[str]


class SqlStore:
    def __init__(self, dialect: Dialect, clock: Clock, max_attempts: int = 3) -> None:
        self.dialect = dialect
        self._sql = queries(dialect.name)
        self._clock = clock
        self.max_attempts = max_attempts
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
            fingerprints = [task.request_fingerprint for task, _ in batch if task.request_fingerprint]
            stored: dict[str, str] = {}
            if fingerprints:
                listed: Any = json.dumps(fingerprints) if self.dialect.name == "sqlite" else fingerprints
                rows = self._run(db, "stored_fingerprints", fingerprints=listed).fetchall()
                stored = {row["request_fingerprint"]: row["task_id"] for row in rows}

            def count_active(secret_id: str) -> int:
                return int(self._run(db, "count_active", secret_id=secret_id).fetchone()["n"])

            plan = plan_creates(batch, stored, count_active, self._clock.now())
            if plan.rows:
                self.dialect.execute_many(db, self._sql["insert_task"], plan.rows)
            return list(plan.outcomes)

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

    def claim(self, worker_id: str, limit: int, lease_seconds: float, batch_key: str | None = None) -> list[Claim]:
        """Lease up to ``limit`` claimable tasks sharing the oldest one's batch key, oldest first
        (or, with ``batch_key``, up to ``limit`` more of that key). A task whose last attempt never
        ended comes first, and alone: if it killed its worker, it cannot take a batch with it."""
        self.dialect.listen()  # before looking: a task created after this look still wakes us
        now = self._clock.now()
        token = secrets.token_hex(16)
        values = {"now": now, "max_attempts": self.max_attempts, "limit": limit, "worker": worker_id,
                  "token": token, "expires": now + lease_seconds}  # fmt: skip
        with self.dialect.transaction() as db:
            if batch_key is None and (orphan := self._run(db, "take_over", **values).fetchone()):
                return [Claim(task_from_row(orphan), token, alone=True)]
            if batch_key is None:
                rows = self._run(db, "claim", **values).fetchall()
            else:
                rows = self._run(db, "claim_key", **values, key=batch_key).fetchall()
        tasks = sorted((task_from_row(row) for row in rows), key=lambda t: (t.created_at, t.task_id))
        return [Claim(task, token) for task in tasks]

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

    def fail(self, task_id: str, token: str, message: str, reason: Reason) -> bool:
        return self._leased(
            "fail", task_id, token, Status.FAIL, message=message, reason=reason.value, now=self._clock.now()
        )

    def retry_later(self, task_id: str, token: str, retry_at: float, message: str) -> bool:
        """Back to WAIT after a transient failure, claimable again from ``retry_at``."""
        return self._leased("retry_later", task_id, token, None, retry_at=retry_at, message=message)

    def release(self, task_id: str, token: str) -> bool:
        """Hand a running task back to WAIT (a worker shutting down); the attempt is not counted."""
        released = self._leased("release", task_id, token, None)
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
        """Block until a task may be claimable, or ``timeout`` seconds pass."""
        self.dialect.wait_for_work(timeout)

    # -- workers ----------------------------------------------------------------------------------

    def record_worker(self, worker: WorkerRecord) -> None:
        """Insert or refresh a worker's row: what it runs on, has loaded, failed to load, is running."""
        with self.dialect.transaction() as db:
            self._run(
                db, "record_worker", worker_id=worker.worker_id, host=worker.host, device=worker.device,
                started_at=worker.started_at, seen_at=worker.seen_at, state=worker.state,
                loaded=json.dumps(worker.loaded), failed=json.dumps(worker.failed), running=json.dumps(worker.running),
            )  # fmt: skip

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
    )
