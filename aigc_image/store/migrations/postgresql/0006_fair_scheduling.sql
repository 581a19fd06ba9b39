-- Fair scheduling across keys (store/fairness.py). Each key's weight (from keys.toml, recorded by
-- the API at each create) and virtual time (the work it has received, over its weight); each
-- task's work (images × steps × megapixels). Tasks stored before count as one unit each.
CREATE TABLE tenants (
    secret_id TEXT PRIMARY KEY,
    weight    DOUBLE PRECISION NOT NULL DEFAULT 1,
    vtime     DOUBLE PRECISION NOT NULL DEFAULT 0
);
ALTER TABLE tasks ADD COLUMN work DOUBLE PRECISION NOT NULL DEFAULT 1;
-- A claim reads the waiting tasks by key and batch key, oldest first within each.
CREATE INDEX tasks_waiting_by_key ON tasks (secret_id, batch_key, created_at) WHERE status = 'WAIT';
