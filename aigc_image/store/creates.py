"""Deciding a batch of creates: replays, per-key caps and the rows to insert.

Shared by the stores so that both answer a batch the same way; each store supplies what
its database already holds (the fingerprints it knows, the active count of a key).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aigc_image.store.base import ActiveTaskLimit
from aigc_image.store.fairness import work
from aigc_image.tasks import NewTask


@dataclass(frozen=True)
class CreatePlan:
    outcomes: list[str | Exception]  # per create: the id that holds it, or why not
    rows: list[dict[str, object]]  # the insert_task query's parameters, one dict per new task


def plan_creates(
    batch: Sequence[tuple[NewTask, int]],
    stored_fingerprints: dict[str, str],
    count_active: Callable[[str], int],
    now: float,
) -> CreatePlan:
    """1. Replays: a fingerprint already stored, or seen earlier in this batch, gets that task.
    2. Caps: a key over its limit of waiting and running tasks gets ActiveTaskLimit.
    3. Everything else becomes a row to insert.
    """
    known = dict(stored_fingerprints)
    active: dict[str, int] = {}
    outcomes: list[str | Exception] = []
    rows = []
    for task, max_active in batch:
        fingerprint = task.request_fingerprint
        if fingerprint and fingerprint in known:
            outcomes.append(known[fingerprint])
            continue
        if max_active > 0:
            if task.secret_id not in active:
                active[task.secret_id] = count_active(task.secret_id)
            if active[task.secret_id] >= max_active:
                outcomes.append(ActiveTaskLimit(f"{active[task.secret_id]} tasks are waiting or running"))
                continue
            active[task.secret_id] += 1
        if fingerprint:
            known[fingerprint] = task.task_id
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
