-- A task retried after a transient failure waits in WAIT until retry_at.
ALTER TABLE tasks ADD COLUMN retry_at REAL;
