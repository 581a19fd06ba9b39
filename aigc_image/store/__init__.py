"""The task store: one SQL implementation (store.py) over SQLite or PostgreSQL."""

from __future__ import annotations

from aigc_image.clock import Clock
from aigc_image.store.base import DefaultModelRecord, StoreError, StoreUnavailable, TaskStore, WorkerRecord


def open_store(url: str, clock: Clock, max_attempts: int = 3) -> TaskStore:
    """Open the store a database URL names: ``sqlite:///PATH`` or ``postgresql://...``."""
    if url.startswith("sqlite:///"):
        from aigc_image.store.sqlite import SqliteStore

        return SqliteStore(url.removeprefix("sqlite:///"), clock, max_attempts)
    if url.startswith(("postgresql://", "postgres://")):
        from aigc_image.store.postgres import PostgresStore

        return PostgresStore(url, clock, max_attempts)
    raise StoreError(f"unsupported database URL {url.split('://')[0]!r}://...; use sqlite:///PATH or postgresql://...")


__all__ = ["DefaultModelRecord", "StoreError", "StoreUnavailable", "TaskStore", "WorkerRecord", "open_store"]
