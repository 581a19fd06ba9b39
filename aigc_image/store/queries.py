"""The task store's SQL, by name, for one database: read once from queries.sql."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

COLUMNS = (
    "task_id, secret_id, status, spec, created_at, started_at, finished_at, "
    "attempts, message, reason, result_keys, results_purged, step, steps, queued_at, fetch_seconds"
)
CLAIMABLE = "status = 'WAIT' AND (retry_at IS NULL OR retry_at <= :now)"
# A task whose last attempt never ended (its worker died or stalled past the lease): taken over
# alone, never in a batch (store.claim).
ORPHANED = "status = 'RUN' AND lease_expires_at < :now AND attempts < :max_attempts"
_SECTION = re.compile(r"^-- name: (\w+)(?: \[(\w+)\])?$", re.MULTILINE)
_PARAMETER = re.compile(r"(?<![:\w]):(\w+)")


@cache
def queries(dialect: str) -> dict[str, str]:
    """Every query of queries.sql as ``dialect`` (``sqlite`` or ``postgresql``) runs it."""
    text = resources.files("aigc_image.store").joinpath("queries.sql").read_text("utf-8")
    parts = _SECTION.split(text)[1:]  # name, dialect, body, name, dialect, body, ...
    shared: dict[str, str] = {}
    own: dict[str, str] = {}
    for name, only, body in zip(parts[0::3], parts[1::3], parts[2::3], strict=True):
        if only and only not in ("sqlite", "postgresql"):
            raise ValueError(f"queries.sql: unknown database {only!r} for {name}")
        if only is None:
            shared[name] = body
        elif only == dialect:
            own[name] = body
    found = shared | own
    return {name: _prepared(body, dialect) for name, body in found.items()}


def _prepared(body: str, dialect: str) -> str:
    lines = [line for line in body.strip().splitlines() if not line.lstrip().startswith("--")]
    sql = "\n".join(lines).format(
        columns=COLUMNS,
        qualified_columns=", ".join(f"tasks.{column}" for column in COLUMNS.split(", ")),
        claimable=CLAIMABLE,
        orphaned=ORPHANED,
    )
    if dialect == "postgresql":
        # psycopg's named parameters; "::" casts are left alone by the lookbehind.
        sql = _PARAMETER.sub(r"%(\1)s", sql)
    return sql
