"""SQLite, for one host: WAL mode, one writer at a time (BEGIN IMMEDIATE), Unix datagram wake-ups.

Several processes (the API and its workers) share one database file. Commits use
``synchronous=NORMAL``: a committed task survives a crash or kill of any process; an
operating-system crash or power loss may lose the last commits (see docs/operations.md).

A database file deleted or replaced while the service runs would otherwise go unnoticed: the
open connection keeps writing to the unlinked file, and every task acknowledged from then on
is gone at the next start. So every transaction first checks that the path still names the
file that was opened (device and inode, with its write-ahead log); if not, the store is
unavailable: creates are refused with ``InternalError`` and /readyz says why.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aigc_image.clock import Clock
from aigc_image.store.base import StoreError, StoreUnavailable
from aigc_image.store.fairness import Scheduling
from aigc_image.store.migrations import migrations
from aigc_image.store.store import SqlStore
from aigc_image.store.wake import WakeReceiver, WakeSender, wake_dir

log = logging.getLogger(__name__)


class SqliteDialect:
    name = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._identity: tuple[int, int] | None = None
        self._wal_identity: tuple[int, int] | None = None
        self._replaced = False
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._identity = _identity(path)
            self.migrate()
        except (sqlite3.Error, OSError, StoreUnavailable) as exc:
            raise StoreError(f"cannot open SQLite database {path}: {exc}") from exc
        self._wake_dir = wake_dir(path)
        self._sender = WakeSender(self._wake_dir)
        self._receiver: WakeReceiver | None = None

    @contextmanager
    def transaction(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        with self._lock, _unavailable_on_error():
            self._check_file()
            self._db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield self._db
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _check_file(self) -> None:
        wal = f"{self.path}-wal"
        problem = ""
        if _identity(self.path) != self._identity:
            problem = f"the database file {self.path} was deleted or replaced while the service was using it"
        elif self._wal_identity is None:
            self._wal_identity = _identity(wal)  # created by the first write in WAL mode
        elif _identity(wal) != self._wal_identity:
            problem = f"the write-ahead log {wal} was deleted or replaced while the service was using it"
        if problem:
            if not self._replaced:
                log.error("%s; refusing to store anything more until the service is restarted", problem)
                self._replaced = True
            raise StoreUnavailable(f"SQLite: {problem}")

    def execute_many(self, connection: Any, sql: str, rows: Sequence[dict[str, Any]]) -> None:
        connection.executemany(sql, rows)

    def wake(self) -> None:
        self._sender.wake_all()

    def listen(self) -> None:
        if self._receiver is None:
            self._receiver = WakeReceiver(self._wake_dir)

    def wait_for_work(self, timeout: float) -> None:
        self.listen()
        assert self._receiver is not None
        self._receiver.wait(timeout)

    def interrupt_wait(self) -> None:
        if self._receiver is not None:  # None: this store has never waited, nor claimed, so none is waiting
            self._receiver.interrupt()

    def migrate(self) -> None:
        with self.transaction() as db:
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

    def close(self) -> None:
        if self._receiver is not None:
            self._receiver.close()
        self._sender.close()
        with self._lock:
            self._db.close()


class SqliteStore(SqlStore):
    """The task store on the SQLite file at ``path``."""

    def __init__(self, path: str, clock: Clock, max_attempts: int = 3, scheduling: Scheduling | None = None) -> None:
        super().__init__(SqliteDialect(path), clock, max_attempts, scheduling)


def _identity(path: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino


@contextmanager
def _unavailable_on_error() -> Iterator[None]:
    """A locked or unreadable database is an outage the caller may retry, not a bug."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        raise StoreUnavailable(f"SQLite: {exc}") from exc
