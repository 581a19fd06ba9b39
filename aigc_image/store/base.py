"""The TaskStore protocol: what the API and the workers need from a database.

State transitions allowed (anything else is refused by the store):

    WAIT ──claim──▶ RUN ──complete──▶ DONE
                     │  ──fail──────▶ FAIL
                     └─ lease expired ─▶ claimable again (attempts < max), else FAIL

``complete``, ``fail`` and ``heartbeat`` succeed only with the current lease token, so a
worker whose lease expired cannot overwrite the outcome of a newer attempt.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from aigc_image.tasks import Claim, Task, TaskSpec


class StoreError(Exception):
    """The store cannot be opened or reached."""


class TaskStore(Protocol):
    # API side: called from the event loop.

    async def create(self, task_id: str, secret_id: str, spec: TaskSpec) -> None:
        """Insert a WAIT task; returns once it is committed. Then wakes idle workers."""
        ...

    async def get(self, task_id: str) -> Task | None: ...

    # Worker and sweeper side: called from their own threads or processes.

    def claim(self, worker_id: str, limit: int, lease_seconds: float) -> list[Claim]:
        """Lease up to ``limit`` claimable tasks sharing the oldest one's batch key."""
        ...

    def heartbeat(self, task_id: str, token: str, lease_seconds: float) -> bool: ...

    def complete(self, task_id: str, token: str, result_keys: Sequence[str]) -> bool: ...

    def fail(self, task_id: str, token: str, message: str) -> bool: ...

    def fail_exhausted(self) -> int:
        """FAIL tasks whose lease expired after their last allowed attempt; returns how many."""
        ...

    def finished_before(self, cutoff: float, limit: int) -> list[Task]:
        """DONE tasks finished before ``cutoff`` whose images are still stored."""
        ...

    def mark_results_purged(self, task_id: str) -> None: ...

    def wait_for_work(self, timeout: float) -> None:
        """Block until a task may be claimable, or ``timeout`` seconds pass."""
        ...

    def close(self) -> None: ...
