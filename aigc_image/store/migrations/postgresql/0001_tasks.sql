-- Image tasks: one row per CreateAigcImageTask, from WAIT to DONE or FAIL.
-- The same columns as the SQLite schema after all its migrations (a test keeps them equal).
-- Times are Unix seconds from the service's clock, as in SQLite.
CREATE TABLE tasks (
    task_id             TEXT PRIMARY KEY,
    secret_id           TEXT NOT NULL,
    status              TEXT NOT NULL CHECK (status IN ('WAIT', 'RUN', 'DONE', 'FAIL')),
    spec                TEXT NOT NULL,              -- TaskSpec as JSON
    batch_key           TEXT NOT NULL,              -- tasks with equal keys may be batched
    created_at          DOUBLE PRECISION NOT NULL,
    started_at          DOUBLE PRECISION,
    finished_at         DOUBLE PRECISION,
    attempts            INTEGER NOT NULL DEFAULT 0,
    worker_id           TEXT,
    lease_token         TEXT,
    lease_expires_at    DOUBLE PRECISION,
    message             TEXT NOT NULL DEFAULT '',
    result_keys         TEXT NOT NULL DEFAULT '[]', -- JSON array of storage keys
    results_purged      BOOLEAN NOT NULL DEFAULT FALSE,
    request_fingerprint TEXT,                       -- a byte-identical replay finds the original task
    retry_at            DOUBLE PRECISION            -- after a transient failure, WAIT until then
);

-- The queue: unfinished tasks, oldest first (claims walk it with FOR UPDATE SKIP LOCKED).
CREATE INDEX tasks_queue ON tasks (created_at, task_id) WHERE status IN ('WAIT', 'RUN');
CREATE UNIQUE INDEX tasks_request_fingerprint ON tasks (request_fingerprint);
-- The per-key cap on tasks waiting or running counts these.
CREATE INDEX tasks_active_by_key ON tasks (secret_id) WHERE status IN ('WAIT', 'RUN');
-- The sweeper: finished tasks whose images are still stored, and records past retention.
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE status = 'DONE' AND NOT results_purged;
CREATE INDEX tasks_by_finish ON tasks (finished_at) WHERE finished_at IS NOT NULL;
