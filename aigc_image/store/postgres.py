"""PostgreSQL, for several API processes and workers on several hosts.

Claims lock rows with ``FOR UPDATE SKIP LOCKED``, so concurrent workers never wait on each
other nor take the same task (queries.sql). Idle workers ``LISTEN``; whatever makes a task
claimable sends ``NOTIFY`` after it commits.

A worker's own events (a batch whose reference images were fetched) end its wait through a pipe
the wait watches beside the listening connection (``interrupt_wait``).

A lost connection (a database restart, a network cut) raises StoreUnavailable and the next
call reconnects: the API answers ``InternalError`` meanwhile and workers back off (see
worker.py). Times are the service's clock, like SQLite's, so hosts must keep their clocks
in sync (NTP); leases are tens of seconds, so a skew well under a second is harmless.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row

from aigc_image.clock import Clock
from aigc_image.store.base import StoreError, StoreUnavailable
from aigc_image.store.fairness import Scheduling
from aigc_image.store.migrations import migrations
from aigc_image.store.store import SqlStore

log = logging.getLogger(__name__)

CHANNEL = "aigc_image_tasks"
# Held while migrating, so processes starting together apply each migration once.
_MIGRATION_LOCK = 0x41494743  # "AIGC"
_LOST = (psycopg.OperationalError, psycopg.InterfaceError)
# A network cut leaves a connection that neither fails nor answers: TCP would retransmit for
# about 15 minutes before giving up, and meanwhile a query (with the connection's lock) hangs.
# With these, data unacknowledged for 10 s, or an idle peer that misses keepalives, ends the
# connection: the call raises StoreUnavailable and the next one reconnects. libpq parameters in
# the database URL take precedence.
CUT_DETECTION = {
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "10000",  # milliseconds
}


class PostgresDialect:
    name = "postgresql"

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[dict[str, Any]] | None = None
        self._listener: psycopg.Connection[dict[str, Any]] | None = None
        try:
            self.migrate()
        except (StoreUnavailable, psycopg.Error) as exc:
            raise StoreError(f"cannot open PostgreSQL database {_redacted(url)}: {exc}") from exc
        self._interrupted, self._interrupt = os.pipe()  # interrupt_wait writes a byte; wait_for_work reads it
        self._pipe_lock = threading.Lock()  # interrupt_wait (any thread) never writes to a number close freed
        os.set_blocking(self._interrupted, False)
        os.set_blocking(self._interrupt, False)

    def _connect(self) -> psycopg.Connection[dict[str, Any]]:
        given = psycopg.conninfo.conninfo_to_dict(self.url)
        defaults = {key: value for key, value in CUT_DETECTION.items() if key not in given}
        try:
            return psycopg.connect(
                psycopg.conninfo.make_conninfo(self.url, **defaults),
                autocommit=True,
                row_factory=dict_row,
                connect_timeout=5,
                application_name="aigc-image",
            )
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"PostgreSQL: {_first_line(exc)}") from exc

    @contextmanager
    def transaction(self, write: bool = True) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        """One transaction on the shared connection; reconnects after an outage."""
        with self._lock:
            if self._conn is None or self._conn.closed:
                self._conn = self._connect()
            conn = self._conn
            try:
                with conn.transaction():
                    yield conn
            except _LOST as exc:
                if conn.broken or conn.closed:
                    conn.close()
                    self._conn = None
                raise StoreUnavailable(f"PostgreSQL: {_first_line(exc)}") from exc

    def execute_many(self, connection: Any, sql: str, rows: Sequence[dict[str, Any]]) -> None:
        with connection.cursor() as cursor:
            cursor.executemany(sql, rows)

    def wake(self) -> None:
        try:
            with self.transaction() as db:
                db.execute(f"NOTIFY {CHANNEL}")
        except StoreUnavailable:
            pass  # idle workers still find the task at their next poll

    def listen(self) -> None:
        if self._listener is not None and (self._listener.closed or self._listener.broken):
            self._listener = None
        if self._listener is None:
            listener = self._connect()
            try:
                listener.execute(f"LISTEN {CHANNEL}")
            except _LOST as exc:
                listener.close()
                raise StoreUnavailable(f"PostgreSQL: {_first_line(exc)}") from exc
            self._listener = listener

    def wait_for_work(self, timeout: float) -> None:
        self.listen()
        assert self._listener is not None
        try:
            if not self._drain():  # none received already (psycopg keeps those that came meanwhile)
                ready, _, _ = select.select([self._listener.fileno(), self._interrupted], [], [], timeout)
                if self._interrupted in ready:
                    with contextlib.suppress(BlockingIOError):
                        while os.read(self._interrupted, 4096):  # every interrupt so far: one wait ended
                            pass
                self._drain()  # one wake-up per wait is enough
        except _LOST:
            self._listener.close()
            self._listener = None
            # Listen again (StoreUnavailable while the server is still down). Notifications sent
            # while we were away are lost, so return now and let the caller look for work.
            self.listen()

    def _drain(self) -> bool:
        """Consume the wake-ups received so far; whether there were any."""
        assert self._listener is not None
        return bool(list(self._listener.notifies(timeout=0)))

    def interrupt_wait(self) -> None:
        with self._pipe_lock, contextlib.suppress(BlockingIOError):  # full: an interrupt is pending already
            if self._interrupt >= 0:  # not closed
                os.write(self._interrupt, b"!")

    def migrate(self) -> None:
        with self.transaction() as db:
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)")
            row = db.execute("SELECT coalesce(max(version), 0) AS version FROM schema_migrations").fetchone()
            current = row["version"] if row else 0
            for number, script in migrations("postgresql"):
                if number > current:
                    db.execute(script.encode())  # bytes: a multi-statement script, sent as one query
                    db.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (number,))

    def schema_version(self) -> int:
        with self.transaction() as db:
            row = db.execute("SELECT max(version) AS version FROM schema_migrations").fetchone()
            return int(row["version"]) if row else 0

    def close(self) -> None:
        with self._lock:
            for conn in (self._conn, self._listener):
                if conn is not None:
                    conn.close()
            self._conn = self._listener = None
        with self._pipe_lock:
            for end in (self._interrupted, self._interrupt):
                if end >= 0:
                    os.close(end)
            self._interrupted = self._interrupt = -1  # the numbers may be another file's from now on


class PostgresStore(SqlStore):
    """The task store in the PostgreSQL database at ``url``."""

    def __init__(self, url: str, clock: Clock, max_attempts: int = 3, scheduling: Scheduling | None = None) -> None:
        self._url = url
        super().__init__(PostgresDialect(url), clock, max_attempts, scheduling)


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _redacted(url: str) -> str:
    """The URL without its password, for error messages."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    info.pop("password", None)
    return " ".join(f"{k}={v}" for k, v in info.items())
