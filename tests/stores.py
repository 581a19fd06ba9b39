"""Fresh databases of each kind for the store conformance suite."""

from __future__ import annotations

from dataclasses import dataclass

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
