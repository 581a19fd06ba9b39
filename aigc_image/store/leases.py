"""The worker-side state transitions, written once for both databases.

The SQL uses ``:name`` parameters (SQLite's style); the PostgreSQL store rewrites them to
``%(name)s`` with ``pyformat``. Each store supplies two primitives: one transaction that
applies a leased update (and, when no row changed, asks whether this lease already finished
the task), and a plain counted update.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from aigc_image.clock import Clock
from aigc_image.tasks import Status, Task, TaskSpec

COLUMNS = (
    "task_id, secret_id, status, spec, created_at, started_at, finished_at, "
    "attempts, message, result_keys, results_purged, step, steps"
)
CLAIMABLE = (
    "((status = 'WAIT' AND (retry_at IS NULL OR retry_at <= :now))"
    " OR (status = 'RUN' AND lease_expires_at < :now AND attempts < :max_attempts))"
)
_LEASED = "WHERE task_id = :task_id AND status = 'RUN' AND lease_token = :token"
# A finished task keeps the token that finished it, so a finish retried after an outage
# (did it commit?) is answered True by the lease that recorded it, and False by any other.
FINISHED_BY = "SELECT 1 FROM tasks WHERE task_id = :task_id AND status = :status AND lease_token = :token"
_FAIL_EXHAUSTED = (
    "UPDATE tasks SET status = 'FAIL', finished_at = :now, lease_token = NULL, "
    "message = 'The worker running this task stopped responding ' || attempts || ' times; giving up.' "
    "WHERE status = 'RUN' AND lease_expires_at < :now AND attempts >= :max_attempts"
)


def pyformat(sql: str) -> str:
    """``:name`` parameters as ``%(name)s`` (psycopg); the shared SQL has no other colons."""
    return re.sub(r"(?<![:\w]):(\w+)", r"%(\1)s", sql)


def task_from_row(row: Mapping[str, Any]) -> Task:
    return Task(
        task_id=row["task_id"],
        secret_id=row["secret_id"],
        spec=TaskSpec.from_json(row["spec"]),
        status=Status(row["status"]),
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        attempts=row["attempts"],
        message=row["message"],
        result_keys=tuple(json.loads(row["result_keys"])),
        results_purged=bool(row["results_purged"]),
        step=row["step"],
        steps=row["steps"],
    )


class LeasedTransitions:
    """heartbeat, complete, fail, retry_later, release and fail_exhausted for a SQL store."""

    _clock: Clock
    max_attempts: int

    def _apply_leased(self, update: str, values: dict[str, object], finished: Status | None) -> bool:
        """Run ``update`` in one transaction; True if it changed the row, else (with ``finished``)
        whether FINISHED_BY finds the task finished by this lease."""
        raise NotImplementedError

    def _count_update(self, update: str, values: dict[str, object]) -> int:
        raise NotImplementedError

    def _wake_workers(self) -> None:
        """Tell idle workers a task became claimable."""
        raise NotImplementedError

    def _update_leased(
        self, assignments: str, task_id: str, token: str, finished: Status | None = None, **values: object
    ) -> bool:
        update = f"UPDATE tasks SET {assignments} {_LEASED}"
        return self._apply_leased(update, {**values, "task_id": task_id, "token": token}, finished)

    def heartbeat(
        self, task_id: str, token: str, lease_seconds: float, progress: tuple[int, int] | None = None
    ) -> bool:
        expires = self._clock.now() + lease_seconds
        if progress is None:
            return self._update_leased("lease_expires_at = :expires", task_id, token, expires=expires)
        step, steps = progress
        assignments = "lease_expires_at = :expires, step = :step, steps = :steps"
        return self._update_leased(assignments, task_id, token, expires=expires, step=step, steps=steps)

    def complete(self, task_id: str, token: str, result_keys: Sequence[str]) -> bool:
        return self._update_leased(
            "status = 'DONE', message = 'ok', result_keys = :keys, finished_at = :now",
            task_id,
            token,
            Status.DONE,
            keys=json.dumps(list(result_keys)),
            now=self._clock.now(),
        )

    def fail(self, task_id: str, token: str, message: str) -> bool:
        return self._update_leased(
            "status = 'FAIL', message = :message, finished_at = :now",
            task_id,
            token,
            Status.FAIL,
            message=message,
            now=self._clock.now(),
        )

    def retry_later(self, task_id: str, token: str, retry_at: float, message: str) -> bool:
        return self._update_leased(
            "status = 'WAIT', retry_at = :retry_at, message = :message, worker_id = NULL, lease_token = NULL, "
            "lease_expires_at = NULL",
            task_id,
            token,
            retry_at=retry_at,
            message=message,
        )

    def release(self, task_id: str, token: str) -> bool:
        released = self._update_leased(
            "status = 'WAIT', attempts = attempts - 1, worker_id = NULL, lease_token = NULL, lease_expires_at = NULL",
            task_id,
            token,
        )
        if released:
            self._wake_workers()  # another idle worker can take it at once
        return released

    def fail_exhausted(self) -> int:
        return self._count_update(_FAIL_EXHAUSTED, {"now": self._clock.now(), "max_attempts": self.max_attempts})
