"""The task store: one SQL implementation (store.py) over SQLite or PostgreSQL."""

from __future__ import annotations

from aigc_image.clock import Clock
from aigc_image.store.base import DefaultModelRecord, StoreError, StoreUnavailable, TaskStore, WorkerRecord
from aigc_image.store.fairness import Scheduling


def open_store(url: str, clock: Clock, max_attempts: int = 3, scheduling: Scheduling | None = None) -> TaskStore:
    """Open the store a database URL names: ``sqlite:///PATH`` or ``postgresql://...``; ``scheduling``:
    the claim order (default: fair, with model affinity)."""
    if url.startswith("sqlite:///"):
        from aigc_image.store.sqlite import SqliteStore

        return SqliteStore(url.removeprefix("sqlite:///"), clock, max_attempts, scheduling)
    if url.startswith(("postgresql://", "postgres://")):
        from aigc_image.store.postgres import PostgresStore

        return PostgresStore(url, clock, max_attempts, scheduling)
    raise StoreError(f"unsupported database URL {url.split('://')[0]!r}://...; use sqlite:///PATH or postgresql://...")


__all__ = [
    "DefaultModelRecord",
    "Scheduling",
    "StoreError",
    "StoreUnavailable",
    "TaskStore",
    "WorkerRecord",
    "open_store",
]
