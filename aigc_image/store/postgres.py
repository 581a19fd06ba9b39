"""The PostgreSQL task store: for several API processes and workers on several hosts.

Claims lock rows with ``FOR UPDATE SKIP LOCKED``, so concurrent workers never wait on each
other nor take the same task. A create sends ``NOTIFY`` in its transaction; idle workers
``LISTEN`` and claim the moment it commits.

A lost connection (a database restart, a network cut) raises StoreUnavailable and the next
call reconnects: the API answers ``InternalError`` meanwhile and workers back off (see
worker.py). Times are the service's clock, like SQLite's, so hosts must keep their clocks
in sync (NTP); leases are tens of seconds, so a skew well under a second is harmless.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row

from aigc_image.clock import Clock
from aigc_image.store.base import StoreError, StoreUnavailable
from aigc_image.store.creates import plan_creates
from aigc_image.store.leases import CLAIMABLE, COLUMNS, FINISHED_BY, LeasedTransitions, pyformat, task_from_row
from aigc_image.store.migrations import migrations
from aigc_image.tasks import Claim, NewTask, Status, Task

log = logging.getLogger(__name__)

CHANNEL = "aigc_image_tasks"
# Held while migrating, so processes starting together apply each migration once.
_MIGRATION_LOCK = 0x41494743  # "AIGC"
_CLAIMABLE = pyformat(CLAIMABLE)
_FINISHED_BY = pyformat(FINISHED_BY)
_CLAIM = f"""
WITH picked AS (
    SELECT task_id FROM tasks
    WHERE {_CLAIMABLE} AND batch_key = (
        SELECT batch_key FROM tasks WHERE {_CLAIMABLE}
        ORDER BY created_at, task_id LIMIT 1 FOR UPDATE SKIP LOCKED
    )
    ORDER BY created_at, task_id LIMIT %(limit)s FOR UPDATE SKIP LOCKED
)
UPDATE tasks SET status = 'RUN', attempts = tasks.attempts + 1, worker_id = %(worker)s,
    lease_token = %(token)s, lease_expires_at = %(expires)s, started_at = %(now)s, step = 0
FROM picked WHERE tasks.task_id = picked.task_id
RETURNING {", ".join("tasks." + c for c in COLUMNS.split(", "))}
"""


class PostgresStore(LeasedTransitions):
    def __init__(self, url: str, clock: Clock, max_attempts: int = 3) -> None:
        self._url = url
        self._clock = clock
        self.max_attempts = max_attempts
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[dict[str, Any]] | None = None
        self._listener: psycopg.Connection[dict[str, Any]] | None = None
        self._pending: list[tuple[NewTask, int, asyncio.Future[str]]] = []
        self._flusher: asyncio.Task[None] | None = None
        try:
            self._migrate()
        except (StoreUnavailable, psycopg.Error) as exc:
            raise StoreError(f"cannot open PostgreSQL database {_redacted(url)}: {exc}") from exc

    # -- connections ----------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[dict[str, Any]]:
        try:
            return psycopg.connect(
                self._url, autocommit=True, row_factory=dict_row, connect_timeout=5, application_name="aigc-image"
            )
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"PostgreSQL: {_first_line(exc)}") from exc

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        """One transaction on the shared connection; reconnects after an outage."""
        with self._lock:
            if self._conn is None or self._conn.closed:
                self._conn = self._connect()
            conn = self._conn
            try:
                with conn.transaction():
                    yield conn
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                if conn.broken or conn.closed:
                    conn.close()
                    self._conn = None
                raise StoreUnavailable(f"PostgreSQL: {_first_line(exc)}") from exc

    def _migrate(self) -> None:
        with self._transaction() as db:
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)")
            row = db.execute("SELECT coalesce(max(version), 0) AS version FROM schema_migrations").fetchone()
            current = row["version"] if row else 0
            for number, script in migrations("postgresql"):
                if number > current:
                    db.execute(script.encode())  # bytes: a multi-statement script, sent as one query
                    db.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (number,))

    def schema_version(self) -> int:
        with self._transaction() as db:
            row = db.execute("SELECT max(version) AS version FROM schema_migrations").fetchone()
            return int(row["version"]) if row else 0

    # -- API side -------------------------------------------------------------------------

    async def create(self, task: NewTask, max_active_per_key: int = 0) -> str:
        """Group commit: creates that arrive while a batch is committing form the next batch.

        Each caller returns only after the commit that holds its row.
        """
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending.append((task, max_active_per_key, future))
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_creates())
        return await future

    async def _flush_creates(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    outcomes = await asyncio.to_thread(self._insert_batch, [(t, cap) for t, cap, _ in batch])
                except Exception as exc:  # nothing of the batch was stored; every caller hears why
                    outcomes = [exc] * len(batch)
                for (_, _, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if isinstance(outcome, Exception):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
        finally:
            self._flusher = None

    def _insert_batch(self, batch: list[tuple[NewTask, int]]) -> list[str | Exception]:
        with self._transaction() as db:
            # Creates of one key are serialised across API processes, so the replay lookup and
            # the cap count below see every committed create of that key.
            keys = sorted({task.secret_id for task, _ in batch})
            db.execute(
                "SELECT pg_advisory_xact_lock(hashtext('aigc-image:' || k)) FROM unnest(%s::text[]) AS k", (keys,)
            )
            fingerprints = [task.request_fingerprint for task, _ in batch if task.request_fingerprint]
            stored: dict[str, str] = {}
            if fingerprints:
                rows = db.execute(
                    "SELECT request_fingerprint, task_id FROM tasks WHERE request_fingerprint = ANY(%s)",
                    (fingerprints,),
                ).fetchall()
                stored = {row["request_fingerprint"]: row["task_id"] for row in rows}

            def count_active(secret_id: str) -> int:
                row = db.execute(
                    "SELECT count(*) AS n FROM tasks WHERE secret_id = %s AND status IN ('WAIT', 'RUN')", (secret_id,)
                ).fetchone()
                return int(row["n"]) if row else 0

            plan = plan_creates(batch, stored, count_active, self._clock.now())
            if plan.rows:
                with db.cursor() as cursor:
                    cursor.executemany(
                        "INSERT INTO tasks (task_id, secret_id, status, spec, batch_key, created_at, "
                        "request_fingerprint) VALUES (%s, %s, 'WAIT', %s, %s, %s, %s)",
                        plan.rows,
                    )
                db.execute(f"NOTIFY {CHANNEL}")  # delivered at commit
            return plan.outcomes

    async def get(self, task_id: str) -> Task | None:
        return await asyncio.to_thread(self._get, task_id)

    def _get(self, task_id: str) -> Task | None:
        with self._transaction() as db:
            row = db.execute(f"SELECT {COLUMNS} FROM tasks WHERE task_id = %s", (task_id,)).fetchone()
        return task_from_row(row) if row else None

    async def list_tasks(
        self, secret_id: str, status: Status | None, task_id: str | None, offset: int, limit: int
    ) -> tuple[int, list[Task]]:
        return await asyncio.to_thread(self._list_tasks, secret_id, status, task_id, offset, limit)

    def _list_tasks(
        self, secret_id: str, status: Status | None, task_id: str | None, offset: int, limit: int
    ) -> tuple[int, list[Task]]:
        where, args = "secret_id = %s", [secret_id]
        if status is not None:
            where, args = where + " AND status = %s", [*args, status.value]
        if task_id is not None:
            where, args = where + " AND task_id = %s", [*args, task_id]
        with self._transaction() as db:
            row = db.execute(f"SELECT count(*) AS n FROM tasks WHERE {where}", args).fetchone()
            rows = db.execute(
                f"SELECT {COLUMNS} FROM tasks WHERE {where} ORDER BY created_at DESC, task_id DESC LIMIT %s OFFSET %s",
                [*args, limit, offset],
            ).fetchall()
        return int(row["n"]) if row else 0, [task_from_row(r) for r in rows]

    # -- worker side ----------------------------------------------------------------------

    def claim(self, worker_id: str, limit: int, lease_seconds: float) -> list[Claim]:
        # Listen before looking, so a task committed between this look and the next
        # wait_for_work() still wakes us.
        self._listen()
        now = self._clock.now()
        token = secrets.token_hex(16)
        expires = now + lease_seconds
        args = {
            "now": now,
            "max_attempts": self.max_attempts,
            "limit": limit,
            "worker": worker_id,
            "token": token,
            "expires": expires,
        }
        with self._transaction() as db:
            rows = db.execute(_CLAIM, args).fetchall()
        tasks = sorted((task_from_row(r) for r in rows), key=lambda t: (t.created_at, t.task_id))
        return [Claim(task, token, expires) for task in tasks]

    def _apply_leased(self, update: str, values: dict[str, object], finished: Status | None) -> bool:
        with self._transaction() as db:
            if db.execute(pyformat(update), values).rowcount == 1:
                return True
            if finished is None:
                return False
            confirm = {"task_id": values["task_id"], "token": values["token"], "status": finished.value}
            return db.execute(_FINISHED_BY, confirm).fetchone() is not None

    def _count_update(self, update: str, values: dict[str, object]) -> int:
        with self._transaction() as db:
            return db.execute(pyformat(update), values).rowcount

    def _wake_workers(self) -> None:
        try:
            with self._transaction() as db:
                db.execute(f"NOTIFY {CHANNEL}")
        except StoreUnavailable:
            pass  # idle workers still find the task at their next poll

    def wait_for_work(self, timeout: float) -> None:
        listener = self._listen()
        try:
            for _ in listener.notifies(timeout=timeout, stop_after=1):
                pass
            for _ in listener.notifies(timeout=0):  # drain: one wake-up per wait is enough
                pass
        except (psycopg.OperationalError, psycopg.InterfaceError):
            listener.close()
            self._listener = None
            # Listen again (StoreUnavailable while the server is still down). Notifications sent
            # while we were away are lost, so return now and let the caller look for work.
            self._listen()

    def _listen(self) -> psycopg.Connection[dict[str, Any]]:
        if self._listener is not None and (self._listener.closed or self._listener.broken):
            self._listener = None
        if self._listener is None:
            listener = self._connect()
            try:
                listener.execute(f"LISTEN {CHANNEL}")
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                listener.close()
                raise StoreUnavailable(f"PostgreSQL: {_first_line(exc)}") from exc
            self._listener = listener
        return self._listener

    # -- sweeper side ---------------------------------------------------------------------

    def finished_before(self, cutoff: float, limit: int) -> list[Task]:
        with self._transaction() as db:
            rows = db.execute(
                f"SELECT {COLUMNS} FROM tasks WHERE status = 'DONE' AND NOT results_purged AND finished_at < %s "
                "ORDER BY finished_at LIMIT %s",
                (cutoff, limit),
            ).fetchall()
        return [task_from_row(r) for r in rows]

    def delete_finished_before(self, cutoff: float, limit: int) -> list[Task]:
        with self._transaction() as db:
            rows = db.execute(
                f"DELETE FROM tasks WHERE task_id IN (SELECT task_id FROM tasks WHERE finished_at < %s "
                f"AND status IN ('DONE', 'FAIL') ORDER BY finished_at LIMIT %s FOR UPDATE SKIP LOCKED) "
                f"RETURNING {COLUMNS}",
                (cutoff, limit),
            ).fetchall()
        return [task_from_row(row) for row in rows]

    def mark_results_purged(self, task_id: str) -> None:
        with self._transaction() as db:
            db.execute("UPDATE tasks SET results_purged = TRUE WHERE task_id = %s", (task_id,))

    def close(self) -> None:
        with self._lock:
            for conn in (self._conn, self._listener):
                if conn is not None:
                    conn.close()
            self._conn = self._listener = None


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _redacted(url: str) -> str:
    """The URL without its password, for error messages."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    info.pop("password", None)
    return " ".join(f"{k}={v}" for k, v in info.items())
