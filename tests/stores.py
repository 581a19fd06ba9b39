"""Fresh databases of each kind for the store conformance suite."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

import psycopg

from aigc_image.clock import Clock
from aigc_image.store import TaskStore, open_store


@dataclass(frozen=True)
class Backend:
    """One fresh, empty database: ``kind`` is ``sqlite`` or ``postgresql``."""

    kind: str
    url: str

    def open(self, clock: Clock, max_attempts: int = 3) -> TaskStore:
        """A new connection (a new store object) to this database, migrated on first open."""
        return open_store(self.url, clock, max_attempts)

    def clear(self) -> None:
        """Delete every task and every key's share, for tests that reuse one database."""
        if self.kind == "sqlite":
            with sqlite3.connect(self.url.removeprefix("sqlite:///")) as db:
                db.execute("DELETE FROM tasks")
                db.execute("DELETE FROM tenants")
        else:
            with psycopg.connect(self.url) as db:
                db.execute("DELETE FROM tasks")
                db.execute("DELETE FROM tenants")
