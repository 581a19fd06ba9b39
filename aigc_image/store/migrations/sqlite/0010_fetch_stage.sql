-- Reference images are fetched before a task holds a device (worker/references.py).
-- queued_at: a task's place in the queue, which claims go by: its creation, or, after a fetch of its
-- reference images failed, the time of its retry (it goes behind the work queued meanwhile).
-- fetch_seconds: the time spent fetching its reference images over its attempts (fetch.max_total_seconds).
ALTER TABLE tasks ADD COLUMN queued_at REAL NOT NULL DEFAULT 0;
UPDATE tasks SET queued_at = created_at;
ALTER TABLE tasks ADD COLUMN fetch_seconds REAL NOT NULL DEFAULT 0;
DROP INDEX tasks_waiting_by_key;
CREATE INDEX tasks_waiting_by_key ON tasks (secret_id, batch_key, queued_at) WHERE status = 'WAIT';
