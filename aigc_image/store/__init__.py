"""Task stores: the TaskStore protocol and its implementations."""

from __future__ import annotations

from aigc_image.clock import Clock
from aigc_image.store.base import StoreError, TaskStore


def open_store(url: str, clock: Clock, max_attempts: int = 3) -> TaskStore:
    """Open the store a database URL names (``sqlite:///path``)."""
    if url.startswith("sqlite:///"):
        from aigc_image.store.sqlite import SqliteStore

        return SqliteStore(url.removeprefix("sqlite:///"), clock, max_attempts)
    raise StoreError(f"unsupported database URL {url!r}; use sqlite:///PATH")


__all__ = ["StoreError", "TaskStore", "open_store"]
