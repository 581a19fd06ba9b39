-- A fingerprint of the signed request that created the task: a byte-identical replay of the
-- same request finds the original task instead of creating another.
ALTER TABLE tasks ADD COLUMN request_fingerprint TEXT;
CREATE UNIQUE INDEX tasks_request_fingerprint ON tasks (request_fingerprint);
-- The per-key cap on tasks waiting or running counts these.
CREATE INDEX tasks_active_by_key ON tasks (secret_id, status);
