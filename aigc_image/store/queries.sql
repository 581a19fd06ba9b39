-- Every query of the task store, by name (store/queries.py loads this file once).
--
-- A section starts with "-- name: <query>" and runs to the next one; "-- name: <query> [postgresql]"
-- or "[sqlite]" is that database's own version, used instead of the shared one. Parameters are
-- :name (turned into %(name)s for psycopg once, at load). Times are Unix seconds from the
-- service's clock, never the database's, so one test clock drives both databases.

-- name: insert_task
INSERT INTO tasks (task_id, secret_id, status, spec, batch_key, created_at, queued_at, request_fingerprint, work)
VALUES (:task_id, :secret_id, 'WAIT', :spec, :batch_key, :now, :now, :fingerprint, :work)

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

-- name: key_state
-- A key's share as recorded (NULLs: never recorded), and whether it has tasks waiting or running.
SELECT (SELECT weight FROM tenants WHERE secret_id = :secret_id) AS weight,
       (SELECT vtime FROM tenants WHERE secret_id = :secret_id) AS vtime,
       EXISTS (SELECT 1 FROM tasks WHERE secret_id = :secret_id AND status IN ('WAIT', 'RUN')) AS active

-- name: virtual_clock
-- The least virtual time of the keys with tasks waiting or running, and the greatest of all:
-- where a key that becomes active starts (store/fairness.py: starting_vtime).
SELECT min(CASE WHEN EXISTS (SELECT 1 FROM tasks WHERE tasks.secret_id = tenants.secret_id
                                 AND tasks.status IN ('WAIT', 'RUN')) THEN vtime END) AS active,
       max(vtime) AS latest
FROM tenants

-- name: set_key_state
INSERT INTO tenants (secret_id, weight, vtime) VALUES (:secret_id, :weight, :vtime)
ON CONFLICT (secret_id) DO UPDATE SET weight = excluded.weight, vtime = excluded.vtime

-- name: get_task
SELECT {columns} FROM tasks WHERE task_id = :task_id

-- name: get_task_for_update [sqlite]
SELECT {columns} FROM tasks WHERE task_id = :task_id

-- name: get_task_for_update [postgresql]
-- Held until the transaction ends: a concurrent claim skips the task instead of racing the cancel.
SELECT {columns} FROM tasks WHERE task_id = :task_id FOR UPDATE

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
-- Up to :limit claimable tasks of one batch key, first queued first, whoever sent them (the first-come
-- order's batch). BEGIN IMMEDIATE makes it atomic.
UPDATE tasks SET status = 'RUN', attempts = attempts + 1, worker_id = :worker, lease_token = :token,
    lease_expires_at = :expires, started_at = :now, step = 0
WHERE task_id IN (
    SELECT task_id FROM tasks WHERE {claimable} AND batch_key = :key ORDER BY queued_at, task_id LIMIT :limit
)
RETURNING {columns}

-- name: claim_key [postgresql]
-- Row locks are skipped rather than waited for: concurrent workers never block each other nor take
-- the same task.
WITH picked AS (
    SELECT task_id FROM tasks WHERE {claimable} AND batch_key = :key
    ORDER BY queued_at, task_id LIMIT :limit FOR UPDATE SKIP LOCKED
)
UPDATE tasks SET status = 'RUN', attempts = tasks.attempts + 1, worker_id = :worker, lease_token = :token,
    lease_expires_at = :expires, started_at = :now, step = 0
FROM picked WHERE tasks.task_id = picked.task_id
RETURNING {qualified_columns}

-- name: claimable_heads
-- A claim reads the claimable tasks by key and batch key (store/fairness.py: Head).
SELECT secret_id, batch_key, min(queued_at) AS oldest, count(*) AS n, sum(work) AS work
FROM tasks WHERE {claimable} GROUP BY secret_id, batch_key

-- name: tenants
SELECT secret_id, weight, vtime FROM tenants

-- name: claim_group [sqlite]
-- Up to :limit claimable tasks of one key and one batch key, first queued first.
UPDATE tasks SET status = 'RUN', attempts = attempts + 1, worker_id = :worker, lease_token = :token,
    lease_expires_at = :expires, started_at = :now, step = 0
WHERE task_id IN (
    SELECT task_id FROM tasks WHERE {claimable} AND secret_id = :secret_id AND batch_key = :key
    ORDER BY queued_at, task_id LIMIT :limit
)
RETURNING {columns}

-- name: claim_group [postgresql]
WITH picked AS (
    SELECT task_id FROM tasks WHERE {claimable} AND secret_id = :secret_id AND batch_key = :key
    ORDER BY queued_at, task_id LIMIT :limit FOR UPDATE SKIP LOCKED
)
UPDATE tasks SET status = 'RUN', attempts = tasks.attempts + 1, worker_id = :worker, lease_token = :token,
    lease_expires_at = :expires, started_at = :now, step = 0
FROM picked WHERE tasks.task_id = picked.task_id
RETURNING {qualified_columns}

-- name: charge
-- A key pays for the tasks it was given: their work over its weight. A key with no record (its
-- tasks were stored before fair scheduling) starts at :start.
INSERT INTO tenants (secret_id, weight, vtime) VALUES (:secret_id, 1, :start + :work)
ON CONFLICT (secret_id) DO UPDATE SET vtime = tenants.vtime + :work / tenants.weight

-- name: mark_busy
-- A worker that claims is busy from now on: other workers stop leaving it the tasks of the models
-- it has loaded (store/fairness.py: Affinity) without waiting for its next report to say so.
UPDATE workers SET state = 'busy' WHERE worker_id = :worker AND state = 'idle'

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
UPDATE tasks SET status = 'FAIL', message = :message, reason = :reason, finished_at = :now,
    fetch_seconds = fetch_seconds + :fetch_seconds
WHERE task_id = :task_id AND status = 'RUN' AND lease_token = :token

-- name: finished_by
-- A finished task keeps the token that finished it, so a finish retried after an outage (did it
-- commit?) is answered yes by the lease that recorded it, and no by any other.
SELECT 1 AS finished FROM tasks WHERE task_id = :task_id AND status = :status AND lease_token = :token

-- name: retry_later
-- Back to WAIT until :retry_at, with the time this attempt spent fetching reference images added; with
-- :requeue (its references could not be fetched) it goes behind the work queued meanwhile.
UPDATE tasks SET status = 'WAIT', retry_at = :retry_at, message = :message, worker_id = NULL,
    lease_token = NULL, lease_expires_at = NULL, fetch_seconds = fetch_seconds + :fetch_seconds,
    queued_at = CASE WHEN :requeue THEN :retry_at ELSE queued_at END
WHERE task_id = :task_id AND status = 'RUN' AND lease_token = :token
RETURNING secret_id, work

-- name: charge_again
-- A key whose task is retried because its reference images could not be fetched pays the task's
-- work once more (its weight as recorded): the fair order puts its retry behind the others' work.
UPDATE tenants SET vtime = vtime + :work / weight WHERE secret_id = :secret_id

-- name: release
UPDATE tasks SET status = 'WAIT', attempts = attempts - 1, worker_id = NULL, lease_token = NULL,
    lease_expires_at = NULL, fetch_seconds = fetch_seconds + :fetch_seconds
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

-- name: cancel
-- A task of this key that has not finished ends FAIL at once, its lease token cleared: a worker
-- running it finds its lease gone at its next renewal and drops it (worker/leases.py).
UPDATE tasks SET status = 'FAIL', reason = 'cancelled', message = :message, finished_at = :now,
    lease_token = NULL, retry_at = NULL
WHERE task_id = :task_id AND secret_id = :secret_id AND status IN ('WAIT', 'RUN')
RETURNING {columns}

-- name: delete_task
DELETE FROM tasks WHERE task_id = :task_id AND secret_id = :secret_id AND status IN ('DONE', 'FAIL')

-- name: waiting_ahead
-- Waiting tasks queued before one (the first-come order).
SELECT count(*) AS n FROM tasks
WHERE status = 'WAIT' AND (queued_at < :queued_at OR (queued_at = :queued_at AND task_id < :task_id))

-- name: waiting_ahead_in_key
SELECT count(*) AS n, coalesce(sum(work), 0) AS work FROM tasks
WHERE status = 'WAIT' AND secret_id = :secret_id
  AND (queued_at < :queued_at OR (queued_at = :queued_at AND task_id < :task_id))

-- name: waiting_by_key
SELECT t.secret_id, count(*) AS n, sum(t.work) AS work, coalesce(k.weight, 1) AS weight, k.vtime
FROM tasks t LEFT JOIN tenants k ON k.secret_id = t.secret_id
WHERE t.status = 'WAIT' GROUP BY t.secret_id, k.weight, k.vtime

-- name: waiting_by_weight
-- For the metrics: waiting tasks, and the keys they belong to, by the keys' weight.
SELECT coalesce(k.weight, 1) AS weight, count(DISTINCT t.secret_id) AS keys, count(*) AS n
FROM tasks t LEFT JOIN tenants k ON k.secret_id = t.secret_id
WHERE t.status = 'WAIT' GROUP BY coalesce(k.weight, 1)

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
