-- Every query of the task store, by name (store/queries.py loads this file once).
--
-- A section starts with "-- name: <query>" and runs to the next one; "-- name: <query> [postgresql]"
-- or "[sqlite]" is that database's own version, used instead of the shared one. Parameters are
-- :name (turned into %(name)s for psycopg once, at load). Times are Unix seconds from the
-- service's clock, never the database's, so one test clock drives both databases.

-- name: insert_task
INSERT INTO tasks (task_id, secret_id, status, spec, batch_key, created_at, request_fingerprint)
VALUES (:task_id, :secret_id, 'WAIT', :spec, :batch_key, :now, :fingerprint)

-- name: stored_fingerprints [sqlite]
SELECT request_fingerprint, task_id, created_at FROM tasks
WHERE request_fingerprint IN (SELECT value FROM json_each(:fingerprints))

-- name: stored_fingerprints [postgresql]
SELECT request_fingerprint, task_id, created_at FROM tasks WHERE request_fingerprint = ANY(:fingerprints)

-- name: count_active
SELECT count(*) AS n FROM tasks WHERE secret_id = :secret_id AND status IN ('WAIT', 'RUN')

-- name: lock_keys [sqlite]
-- Nothing to do: BEGIN IMMEDIATE already makes every create transaction the only writer.
SELECT 1

-- name: lock_keys [postgresql]
-- Creates of one key are serialised across API processes, so the replay lookup and the per-key
-- cap count see every committed create of that key.
SELECT pg_advisory_xact_lock(hashtext('aigc-image:' || k)) FROM unnest(:keys::text[]) AS k

-- name: get_task
SELECT {columns} FROM tasks WHERE task_id = :task_id

-- name: count_tasks
-- A key's tasks, optionally of one status or one id (NULL: any).
SELECT count(*) AS n FROM tasks
WHERE secret_id = :secret_id
  AND (CAST(:status AS TEXT) IS NULL OR status = :status)
  AND (CAST(:task_id AS TEXT) IS NULL OR task_id = :task_id)

-- name: list_tasks
SELECT {columns} FROM tasks
WHERE secret_id = :secret_id
  AND (CAST(:status AS TEXT) IS NULL OR status = :status)
  AND (CAST(:task_id AS TEXT) IS NULL OR task_id = :task_id)
ORDER BY created_at DESC, task_id DESC LIMIT :limit OFFSET :offset

-- name: claim [sqlite]
-- Up to :limit claimable tasks sharing the oldest claimable task's batch key, oldest first: the
-- oldest task is always among them, so none waits behind a stream of others. BEGIN IMMEDIATE
-- makes it atomic.
UPDATE tasks SET status = 'RUN', attempts = attempts + 1, worker_id = :worker, lease_token = :token,
    lease_expires_at = :expires, started_at = :now, step = 0
WHERE task_id IN (
    SELECT task_id FROM tasks WHERE {claimable} AND batch_key = (
        SELECT batch_key FROM tasks WHERE {claimable} ORDER BY created_at, task_id LIMIT 1
    )
    ORDER BY created_at, task_id LIMIT :limit
)
RETURNING {columns}

-- name: claim [postgresql]
-- The same, with row locks skipped rather than waited for: concurrent workers never block each
-- other nor take the same task.
WITH picked AS (
    SELECT task_id FROM tasks
    WHERE {claimable} AND batch_key = (
        SELECT batch_key FROM tasks WHERE {claimable}
        ORDER BY created_at, task_id LIMIT 1 FOR UPDATE SKIP LOCKED
    )
    ORDER BY created_at, task_id LIMIT :limit FOR UPDATE SKIP LOCKED
)
UPDATE tasks SET status = 'RUN', attempts = tasks.attempts + 1, worker_id = :worker, lease_token = :token,
    lease_expires_at = :expires, started_at = :now, step = 0
FROM picked WHERE tasks.task_id = picked.task_id
RETURNING {qualified_columns}

-- name: take_over [sqlite]
-- The oldest task whose last attempt never ended, alone.
UPDATE tasks SET attempts = attempts + 1, worker_id = :worker, lease_token = :token, lease_expires_at = :expires,
    started_at = :now, step = 0
WHERE task_id = (SELECT task_id FROM tasks WHERE {orphaned} ORDER BY created_at, task_id LIMIT 1)
RETURNING {columns}

-- name: take_over [postgresql]
WITH picked AS (
    SELECT task_id FROM tasks WHERE {orphaned} ORDER BY created_at, task_id LIMIT 1 FOR UPDATE SKIP LOCKED
)
UPDATE tasks SET attempts = tasks.attempts + 1, worker_id = :worker, lease_token = :token,
    lease_expires_at = :expires, started_at = :now, step = 0
FROM picked WHERE tasks.task_id = picked.task_id
RETURNING {qualified_columns}

-- name: claim_key [sqlite]
-- Up to :limit more claimable tasks of one batch key, oldest first (a batch being filled).
UPDATE tasks SET status = 'RUN', attempts = attempts + 1, worker_id = :worker, lease_token = :token,
    lease_expires_at = :expires, started_at = :now, step = 0
WHERE task_id IN (
    SELECT task_id FROM tasks WHERE {claimable} AND batch_key = :key ORDER BY created_at, task_id LIMIT :limit
)
RETURNING {columns}

-- name: claim_key [postgresql]
WITH picked AS (
    SELECT task_id FROM tasks WHERE {claimable} AND batch_key = :key
    ORDER BY created_at, task_id LIMIT :limit FOR UPDATE SKIP LOCKED
)
UPDATE tasks SET status = 'RUN', attempts = tasks.attempts + 1, worker_id = :worker, lease_token = :token,
    lease_expires_at = :expires, started_at = :now, step = 0
FROM picked WHERE tasks.task_id = picked.task_id
RETURNING {qualified_columns}

-- name: heartbeat
UPDATE tasks SET lease_expires_at = :expires
WHERE task_id = :task_id AND status = 'RUN' AND lease_token = :token

-- name: heartbeat_with_progress
UPDATE tasks SET lease_expires_at = :expires, step = :step, steps = :steps
WHERE task_id = :task_id AND status = 'RUN' AND lease_token = :token

-- name: complete
UPDATE tasks SET status = 'DONE', message = 'ok', result_keys = :keys, finished_at = :now
WHERE task_id = :task_id AND status = 'RUN' AND lease_token = :token

-- name: fail
UPDATE tasks SET status = 'FAIL', message = :message, reason = :reason, finished_at = :now
WHERE task_id = :task_id AND status = 'RUN' AND lease_token = :token

-- name: finished_by
-- A finished task keeps the token that finished it, so a finish retried after an outage (did it
-- commit?) is answered yes by the lease that recorded it, and no by any other.
SELECT 1 AS finished FROM tasks WHERE task_id = :task_id AND status = :status AND lease_token = :token

-- name: retry_later
UPDATE tasks SET status = 'WAIT', retry_at = :retry_at, message = :message, worker_id = NULL,
    lease_token = NULL, lease_expires_at = NULL
WHERE task_id = :task_id AND status = 'RUN' AND lease_token = :token

-- name: release
UPDATE tasks SET status = 'WAIT', attempts = attempts - 1, worker_id = NULL, lease_token = NULL,
    lease_expires_at = NULL
WHERE task_id = :task_id AND status = 'RUN' AND lease_token = :token

-- name: fail_exhausted
UPDATE tasks SET status = 'FAIL', finished_at = :now, lease_token = NULL, reason = 'worker_lost',
    message = 'The worker running this task stopped responding ' || attempts || ' times; giving up.'
WHERE status = 'RUN' AND lease_expires_at < :now AND attempts >= :max_attempts

-- name: expire_leases_of
-- The tasks of a worker known to be dead: their leases end now, so they are claimable at once
-- (their attempt counted, as for any lease that ran out).
UPDATE tasks SET lease_expires_at = :now - 1 WHERE status = 'RUN' AND worker_id = :worker

-- name: finished_before
SELECT {columns} FROM tasks
WHERE status = 'DONE' AND NOT results_purged AND finished_at < :cutoff
ORDER BY finished_at LIMIT :limit

-- name: mark_results_purged
UPDATE tasks SET results_purged = TRUE WHERE task_id = :task_id

-- name: delete_finished_before [sqlite]
DELETE FROM tasks WHERE task_id IN (
    SELECT task_id FROM tasks WHERE finished_at < :cutoff AND status IN ('DONE', 'FAIL')
    ORDER BY finished_at LIMIT :limit
)
RETURNING {columns}

-- name: delete_finished_before [postgresql]
DELETE FROM tasks WHERE task_id IN (
    SELECT task_id FROM tasks WHERE finished_at < :cutoff AND status IN ('DONE', 'FAIL')
    ORDER BY finished_at LIMIT :limit FOR UPDATE SKIP LOCKED
)
RETURNING {columns}

-- name: count_by_status
SELECT status, count(*) AS n FROM tasks WHERE status IN ('WAIT', 'RUN') GROUP BY status

-- name: recent_failures
SELECT {columns} FROM tasks WHERE status = 'FAIL' ORDER BY finished_at DESC LIMIT :limit

-- name: record_worker [sqlite]
INSERT INTO workers (worker_id, host, device, started_at, seen_at, state, loaded, failed, running)
VALUES (:worker_id, :host, :device, :started_at, :seen_at, :state, :loaded, :failed, :running)
ON CONFLICT (worker_id) DO UPDATE SET seen_at = excluded.seen_at, state = excluded.state,
    loaded = excluded.loaded, failed = excluded.failed, running = excluded.running

-- name: record_worker [postgresql]
INSERT INTO workers (worker_id, host, device, started_at, seen_at, state, loaded, failed, running)
VALUES (:worker_id, :host, :device, :started_at, :seen_at, :state, :loaded, :failed, :running)
ON CONFLICT (worker_id) DO UPDATE SET seen_at = EXCLUDED.seen_at, state = EXCLUDED.state,
    loaded = EXCLUDED.loaded, failed = EXCLUDED.failed, running = EXCLUDED.running

-- name: forget_worker
DELETE FROM workers WHERE worker_id = :worker_id

-- name: forget_workers_seen_before
DELETE FROM workers WHERE seen_at < :cutoff

-- name: list_workers
SELECT worker_id, host, device, started_at, seen_at, state, loaded, failed, running FROM workers
ORDER BY worker_id

-- name: default_model
SELECT label, explicit, origin, set_by, set_at FROM default_model WHERE id = 1

-- name: record_default_model
-- Insert the deployment's default model; over a recorded one only as :replace allows: 'any', or
-- 'chosen' (only one the hardware chose, never a configured one). Atomic, so of two processes
-- that disagree, exactly one records its model and the other sees it.
INSERT INTO default_model (id, label, explicit, origin, set_by, set_at)
VALUES (1, :label, :explicit, :origin, :set_by, :set_at)
ON CONFLICT (id) DO UPDATE SET label = excluded.label, explicit = excluded.explicit, origin = excluded.origin,
    set_by = excluded.set_by, set_at = excluded.set_at
WHERE :replace = 'any' OR (:replace = 'chosen' AND default_model.explicit = 0)
