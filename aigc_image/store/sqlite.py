"""The SQLite task store: WAL mode, one writer at a time, BEGIN IMMEDIATE for claims.

Several processes (the API and its workers) share one database file. Commits use
``synchronous=NORMAL``: a committed task survives a crash or kill of any process; an
operating-system crash or power loss may lose the last commits (see docs/operations.md).
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aigc_image.clock import Clock
from aigc_image.store.base import StoreError, StoreUnavailable
from aigc_image.store.creates import plan_creates
from aigc_image.store.leases import CLAIMABLE, COLUMNS, FINISHED_BY, LeasedTransitions, task_from_row
from aigc_image.store.migrations import migrations
from aigc_image.store.wake import WakeReceiver, WakeSender, wake_dir
from aigc_image.tasks import Claim, NewTask, Status, Task


class SqliteStore(LeasedTransitions):
    def __init__(self, path: str, clock: Clock, max_attempts: int = 3) -> None:
        self._clock = clock
        self.max_attempts = max_attempts
        self._lock = threading.Lock()
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
        except (sqlite3.Error, StoreUnavailable) as exc:
            raise StoreError(f"cannot open SQLite database {path}: {exc}") from exc
        self._wake_dir = wake_dir(path)
        self._sender = WakeSender(self._wake_dir)
        self._receiver: WakeReceiver | None = None
        self._pending: list[tuple[NewTask, int, asyncio.Future[str]]] = []

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock, _unavailable_on_error():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock, _unavailable_on_error():
            yield self._db

    def _migrate(self) -> None:
        with self._transaction() as db:
            current = db.execute("PRAGMA user_version").fetchone()[0]
            for number, script in migrations("sqlite"):
                if number > current:
                    for statement in script.split(";\n"):
                        if statement.strip():
                            db.execute(statement)
                    db.execute(f"PRAGMA user_version = {number:d}")

    def schema_version(self) -> int:
        with self._lock:
            return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    # -- API side ---------------------------------------------------------------------

    async def create(self, task: NewTask, max_active_per_key: int = 0) -> str:
        """Group commit: creates that arrive together share one transaction.

        The first create schedules a flush for the loop's next turn; every create that the
        loop runs before then joins the batch. Each caller returns only after the commit
        that holds its row, so an answered create is always stored.
        """
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending.append((task, max_active_per_key, future))
        if len(self._pending) == 1:
            asyncio.get_running_loop().call_soon(self._flush_creates)
        return await future

    def _flush_creates(self) -> None:
        batch, self._pending = self._pending, []
        try:
            with self._transaction() as db:
                outcomes = self._insert_batch(db, [(task, max_active) for task, max_active, _ in batch])
        except Exception as exc:  # nothing of the batch was stored; every caller hears why
            outcomes = [exc] * len(batch)
        for (_, _, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
        self._sender.wake_all()

    def _insert_batch(self, db: sqlite3.Connection, batch: list[tuple[NewTask, int]]) -> list[str | Exception]:
        """Insert a batch in one transaction: for each create, the id that holds it, or why not."""
        fingerprints = [task.request_fingerprint for task, _ in batch if task.request_fingerprint]
        stored: dict[str, str] = {}
        if fingerprints:
            marks = ",".join("?" * len(fingerprints))
            query = f"SELECT request_fingerprint, task_id FROM tasks WHERE request_fingerprint IN ({marks})"
            stored = dict(db.execute(query, fingerprints).fetchall())

        def count_active(secret_id: str) -> int:
            query = "SELECT count(*) FROM tasks WHERE secret_id = ? AND status IN ('WAIT', 'RUN')"
            return int(db.execute(query, (secret_id,)).fetchone()[0])

        plan = plan_creates(batch, stored, count_active, self._clock.now())
        db.executemany(
            "INSERT INTO tasks (task_id, secret_id, status, spec, batch_key, created_at, request_fingerprint) "
            "VALUES (?, ?, 'WAIT', ?, ?, ?, ?)",
            plan.rows,
        )
        return plan.outcomes

    async def get(self, task_id: str) -> Task | None:
        with self._reading() as db:
            row = db.execute(f"SELECT {COLUMNS} FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        return task_from_row(row) if row else None

    async def list_tasks(
        self, secret_id: str, status: Status | None, task_id: str | None, offset: int, limit: int
    ) -> tuple[int, list[Task]]:
        where, args = "secret_id = ?", [secret_id]
        if status is not None:
            where, args = where + " AND status = ?", [*args, status.value]
        if task_id is not None:
            where, args = where + " AND task_id = ?", [*args, task_id]
        with self._reading() as db:
            total = db.execute(f"SELECT count(*) FROM tasks WHERE {where}", args).fetchone()[0]
            rows = db.execute(
                f"SELECT {COLUMNS} FROM tasks WHERE {where} ORDER BY created_at DESC, task_id DESC LIMIT ? OFFSET ?",
                [*args, limit, offset],
            ).fetchall()
        return int(total), [task_from_row(row) for row in rows]

    # -- worker side --------------------------------------------------------------------

    def claim(self, worker_id: str, limit: int, lease_seconds: float) -> list[Claim]:
        # Only workers claim: listen for wake-ups before looking, so a task created between
        # this look and the next wait_for_work() still wakes us.
        self._listen()
        now = self._clock.now()
        token = secrets.token_hex(16)
        expires = now + lease_seconds
        args = {"now": now, "max_attempts": self.max_attempts, "limit": limit}
        with self._transaction() as db:
            first = db.execute(
                f"SELECT batch_key FROM tasks WHERE {CLAIMABLE} ORDER BY created_at, task_id LIMIT 1", args
            ).fetchone()
            if first is None:
                return []
            rows = db.execute(
                f"UPDATE tasks SET status = 'RUN', attempts = attempts + 1, worker_id = :worker, "
                f"lease_token = :token, lease_expires_at = :expires, started_at = :now, step = 0 "
                f"WHERE task_id IN (SELECT task_id FROM tasks WHERE {CLAIMABLE} AND batch_key = :key "
                f"ORDER BY created_at, task_id LIMIT :limit) RETURNING {COLUMNS}",
                {**args, "worker": worker_id, "token": token, "expires": expires, "key": first[0]},
            ).fetchall()
        tasks = sorted((task_from_row(r) for r in rows), key=lambda t: (t.created_at, t.task_id))
        return [Claim(task, token, expires) for task in tasks]

    def _apply_leased(self, update: str, values: dict[str, object], finished: Status | None) -> bool:
        with self._transaction() as db:
            if db.execute(update, values).rowcount == 1:
                return True
            if finished is None:
                return False
            confirm = {"task_id": values["task_id"], "token": values["token"], "status": finished.value}
            return db.execute(FINISHED_BY, confirm).fetchone() is not None

    def _count_update(self, update: str, values: dict[str, object]) -> int:
        with self._transaction() as db:
            return int(db.execute(update, values).rowcount)

    def _wake_workers(self) -> None:
        self._sender.wake_all()

    def wait_for_work(self, timeout: float) -> None:
        self._listen().wait(timeout)

    def _listen(self) -> WakeReceiver:
        if self._receiver is None:
            self._receiver = WakeReceiver(self._wake_dir)
        return self._receiver

    # -- sweeper side -------------------------------------------------------------------

    def finished_before(self, cutoff: float, limit: int) -> list[Task]:
        with self._reading() as db:
            rows = db.execute(
                f"SELECT {COLUMNS} FROM tasks WHERE results_purged = 0 AND finished_at < ? AND status = 'DONE' "
                "ORDER BY finished_at LIMIT ?",
                (cutoff, limit),
            ).fetchall()
        return [task_from_row(r) for r in rows]

    def delete_finished_before(self, cutoff: float, limit: int) -> list[Task]:
        with self._transaction() as db:
            rows = db.execute(
                f"DELETE FROM tasks WHERE task_id IN (SELECT task_id FROM tasks WHERE finished_at < ? "
                f"AND status IN ('DONE', 'FAIL') ORDER BY finished_at LIMIT ?) RETURNING {COLUMNS}",
                (cutoff, limit),
            ).fetchall()
        return [task_from_row(row) for row in rows]

    def mark_results_purged(self, task_id: str) -> None:
        with self._transaction() as db:
            db.execute("UPDATE tasks SET results_purged = 1 WHERE task_id = ?", (task_id,))

    def close(self) -> None:
        if self._receiver is not None:
            self._receiver.close()
        self._sender.close()
        with self._lock:
            self._db.close()


@contextmanager
def _unavailable_on_error() -> Iterator[None]:
    """A locked or unreadable database is an outage the caller may retry, not a bug."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        raise StoreUnavailable(f"SQLite: {exc}") from exc
