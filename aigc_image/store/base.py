"""The TaskStore protocol: what the API and the workers need from a database.

State transitions allowed (anything else is refused by the store):

    WAIT ──claim──▶ RUN ──complete──▶ DONE
      │              │  ──fail──────▶ FAIL
      │              ├─ retry_later (transient error) ─▶ WAIT until its retry time (a failed
      │              │    fetch of its reference images: queued again at that time)
      │              ├─ release (shutdown) ─▶ WAIT, the attempt not counted
      │              ├─ lease expired ─▶ taken over alone (attempts < max), else FAIL
      └──────────────┴─ cancel (its key) ─▶ FAIL, reason cancelled, lease token cleared

    DONE, FAIL ──delete_task (its key), or retention──▶ gone

``complete``, ``fail`` and ``heartbeat`` succeed only with the current lease token, so a
worker whose lease expired, or whose task was cancelled, cannot overwrite the outcome.
"""

from __future__ import annotations

import enum
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from aigc_image.errors import Reason, ServiceError
from aigc_image.store.fairness import UNLIMITED, FetchRoom
from aigc_image.tasks import Claim, NewTask, Status, Task


class StoreError(ServiceError):
    """The store cannot be opened or reached."""

    reason = Reason.STORE_UNAVAILABLE


class StoreUnavailable(StoreError):
    """The database did not answer (restarting, unreachable, locked too long).

    The operation may or may not have been applied; callers retry it later. The API answers
    ``InternalError``; workers back off and retry.
    """


class ActiveTaskLimit(ServiceError):
    """The key already has as many tasks waiting or running as it may."""

    permanent = True
    reason = Reason.TASK_LIMIT


REPORT_INTERVAL = 5.0  # seconds between a worker's reports of itself


def worker_id(pid: int) -> str:
    """The id of the worker process ``pid`` on this host (what its leases record)."""
    return f"{socket.gethostname()}:{pid}"


ALIVE_WITHIN = 3 * REPORT_INTERVAL  # a worker not heard from for longer is taken for dead


class WorkerState(enum.StrEnum):
    IDLE = "idle"  # waiting for work
    BUSY = "busy"  # generating or storing images, or fetching reference images
    STOPPING = "stopping"  # asked to stop: claims nothing more, finishes or hands back what it has


@dataclass(frozen=True)
class WorkerRecord:
    """What a worker last reported about itself (every REPORT_INTERVAL seconds while it runs)."""

    worker_id: str
    host: str
    device: str
    started_at: float
    seen_at: float
    state: WorkerState
    loaded: list[str] = field(default_factory=list)  # model labels
    failed: dict[str, str] = field(default_factory=dict)  # model label → why it could not load
    running: list[str] = field(default_factory=list)  # task ids

    def alive(self, now: float) -> bool:
        return now - self.seen_at <= ALIVE_WITHIN


@dataclass(frozen=True)
class DefaultModelRecord:
    """The deployment's default model as the store records it (deployment.py agrees on it)."""

    label: str  # "Name:Version"
    explicit: bool  # configured (models.default_model, `aigc-image models --set-default`), not chosen for hardware
    origin: str  # the setting that named it, or why the hardware chose it
    set_by: str  # the process that recorded it, e.g. "worker gpu-1:4242"
    set_at: float


class TaskStore(Protocol):
    # API side: called from the event loop.

    async def create(self, task: NewTask, max_active_per_key: int = 0) -> str:
        """Insert a WAIT task and return its id once committed; then wake idle workers.

        A task with the same ``request_fingerprint`` already stored (a replayed request) is
        not inserted again: its id is returned. Raises ActiveTaskLimit when the key already
        has ``max_active_per_key`` tasks waiting or running (0: no limit).
        """
        ...

    async def get(self, task_id: str) -> Task | None: ...

    def get_now(self, task_id: str) -> Task | None:
        """``get``, from a worker's thread."""
        ...

    async def cancel(self, task_id: str, secret_id: str, message: str) -> tuple[Task | None, Task | None]:
        """End a task of ``secret_id`` that is waiting or running (FAIL, reason ``cancelled``).
        Returns the task before and after; the same when it had already finished (None, None: no
        such task of this key)."""
        ...

    async def delete_task(self, task_id: str, secret_id: str) -> bool:
        """Delete a DONE or FAIL task's record; False if the key has no such finished task."""
        ...

    async def tasks_ahead(self, task: Task) -> int:
        """About how many waiting tasks will be claimed before this waiting one (store/fairness.py)."""
        ...

    async def list_tasks(
        self, secret_id: str, status: Status | None, task_id: str | None, offset: int, limit: int
    ) -> tuple[int, list[Task]]:
        """A key's tasks, newest first, optionally only one status or one id: (how many match, one page)."""
        ...

    # Worker and sweeper side: called from their own threads or processes.

    def queue_counts(self) -> dict[Status, int]:
        """Tasks waiting and running now, across every process."""
        ...

    def recent_failures(self, limit: int) -> list[Task]: ...

    def waiting_by_weight(self) -> dict[float, tuple[int, int]]:
        """Key weight → (keys with tasks waiting, tasks waiting)."""
        ...

    def workers(self, forget_before: float | None = None) -> list[WorkerRecord]:
        """Every worker's last record; with ``forget_before``, rows older than it are deleted first."""
        ...

    def claim(
        self,
        worker_id: str,
        limit: int,
        lease_seconds: float,
        batch_key: str | None = None,
        loaded: Sequence[str] = (),
        loaded_since: float = 0.0,
        fetch: FetchRoom = UNLIMITED,
    ) -> list[Claim]:
        """Lease up to ``limit`` claimable tasks that share one batch key, in the store's order
        (fair across keys by default, store/fairness.py; ``loaded``: the worker's models, and
        ``loaded_since`` the clock's time when they last changed, for affinity), or with
        ``batch_key``, up to ``limit`` more of that key. Tasks with reference images: only as many
        as ``fetch`` leaves the worker room to fetch, and one key's only in a batch. A task whose
        last attempt never ended comes first, and alone (``Claim.alone``)."""
        ...

    def heartbeat(
        self, task_id: str, token: str, lease_seconds: float, progress: tuple[int, int] | None = None
    ) -> bool:
        """Renew the lease; ``progress`` (steps done, steps) is recorded for status queries."""
        ...

    def complete(self, task_id: str, token: str, result_keys: Sequence[str]) -> bool: ...

    def fail(self, task_id: str, token: str, message: str, reason: Reason, fetch_seconds: float = 0.0) -> bool:
        """FAIL the task with ``message`` (what its client sees) and ``reason`` (errors.Reason);
        ``fetch_seconds``: this attempt's fetching of reference images, added to the task's."""
        ...

    def retry_later(
        self,
        task_id: str,
        token: str,
        retry_at: float,
        message: str,
        fetch_seconds: float = 0.0,
        requeue: bool = False,
    ) -> bool:
        """Back to WAIT after a transient failure, claimable again from ``retry_at``, with
        ``fetch_seconds`` added to the time spent fetching its reference images. ``requeue`` (its
        references could not be fetched): it goes behind the work queued meanwhile, and under the
        fair order its key pays its work once more."""
        ...

    def release(self, task_id: str, token: str, fetch_seconds: float = 0.0) -> bool:
        """Hand a running task back to WAIT (a worker shutting down); the attempt is not counted, but
        ``fetch_seconds`` (its fetching of reference images) is, so restarts do not reset the bound."""
        ...

    def fail_exhausted(self) -> int:
        """FAIL tasks whose lease expired after their last allowed attempt; returns how many."""
        ...

    def expire_leases_of(self, worker_id: str) -> int:
        """End the leases of a worker known to be dead (its process exited), so its tasks run again."""
        ...

    def record_worker(self, worker: WorkerRecord) -> None: ...

    def forget_worker(self, worker_id: str) -> None: ...

    def default_model(self) -> DefaultModelRecord | None:
        """The deployment's default model, if one is recorded."""
        ...

    def record_default_model(self, record: DefaultModelRecord, replace: str) -> DefaultModelRecord:
        """Record the deployment's default model if none is, or over the recorded one as ``replace``
        allows: ``"none"``, ``"chosen"`` (one chosen for hardware, never a configured one) or
        ``"any"``; atomically. Returns the record in force afterwards (``record`` or the earlier one)."""
        ...

    def finished_before(self, cutoff: float, limit: int) -> list[Task]:
        """DONE tasks finished before ``cutoff`` whose images are still stored."""
        ...

    def mark_results_purged(self, task_id: str) -> None: ...

    def delete_finished_before(self, cutoff: float, limit: int) -> list[Task]:
        """Delete up to ``limit`` DONE/FAIL task records finished before ``cutoff``; returns them."""
        ...

    def wait_for_work(self, timeout: float) -> None:
        """Block until a task may be claimable, or ``timeout`` seconds pass, or ``interrupt_wait``."""
        ...

    def interrupt_wait(self) -> None:
        """End this store's ``wait_for_work`` now, or its next one at once: the worker has work of
        its own (a batch whose reference images were fetched). Safe from any thread."""
        ...

    def close(self) -> None: ...
