"""Deciding a batch of creates: replays, per-key caps and the rows to insert.

Shared by the stores so that both answer a batch the same way; each store supplies what
its database already holds (the fingerprints it knows, the active count of a key).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aigc_image.store.base import ActiveTaskLimit
from aigc_image.store.fairness import work
from aigc_image.tasks import NewTask


@dataclass(frozen=True)
class CreatePlan:
    outcomes: list[str | Exception]  # per create: the id that holds it, or why not
    rows: list[dict[str, object]]  # the insert_task query's parameters, one dict per new task


def fingerprint_keys(task: NewTask, now: float) -> list[str]:
    """The stored fingerprints that find an earlier create of ``task``'s request; it is stored
    under the first.

    A fingerprint with a window is stored with the number of the window-long period it was made
    in, and looked up in this period and the one before: the unique index never holds two equal
    values, and a row older than its window stops matching without being changed.
    """
    fingerprint = task.request_fingerprint
    if not fingerprint:
        return []
    if task.fingerprint_window <= 0:
        return [fingerprint]
    period = int(now // task.fingerprint_window)
    return [_in_period(fingerprint, period), _in_period(fingerprint, period - 1)]


def _in_period(fingerprint: str, period: int) -> str:
    return hashlib.sha256(f"{fingerprint}@{period}".encode()).hexdigest()[:32]


def plan_creates(
    batch: Sequence[tuple[NewTask, int]],
    stored_fingerprints: dict[str, tuple[str, float]],
    count_active: Callable[[str], int],
    now: float,
) -> CreatePlan:
    """1. Replays: a fingerprint already stored (within its window), or seen earlier in this batch,
       gets that task.
    2. Caps: a key over its limit of waiting and running tasks gets ActiveTaskLimit.
    3. Everything else becomes a row to insert.

    ``stored_fingerprints``: fingerprint → (task id, created at) of the rows already stored.
    """
    known = dict(stored_fingerprints)
    active: dict[str, int] = {}
    outcomes: list[str | Exception] = []
    rows = []
    for task, max_active in batch:
        keys = fingerprint_keys(task, now)
        earlier = _earlier(task, keys, known, now)
        if earlier:
            outcomes.append(earlier)
            continue
        if max_active > 0:
            if task.secret_id not in active:
                active[task.secret_id] = count_active(task.secret_id)
            if active[task.secret_id] >= max_active:
                outcomes.append(ActiveTaskLimit(f"{active[task.secret_id]} tasks are waiting or running"))
                continue
            active[task.secret_id] += 1
        fingerprint = keys[0] if keys and keys[0] not in known else None  # an equal new one keeps none
        if fingerprint:
            known[fingerprint] = (task.task_id, now)
        spec = task.spec
        rows.append(
            {
                "task_id": task.task_id,
                "secret_id": task.secret_id,
                "spec": spec.to_json(),
                "batch_key": spec.batch_key,
                "now": now,
                "fingerprint": fingerprint,
                "work": work(spec),
            }
        )
        outcomes.append(task.task_id)
    return CreatePlan(outcomes, rows)


def _earlier(task: NewTask, keys: list[str], known: dict[str, tuple[str, float]], now: float) -> str | None:
    """The task an earlier create of the same request made, if ``task`` may join it."""
    if not task.joins_earlier:
        return None
    for key in keys:
        if key in known:
            task_id, created_at = known[key]
            if task.fingerprint_window <= 0 or created_at >= now - task.fingerprint_window:
                return task_id
    return None
