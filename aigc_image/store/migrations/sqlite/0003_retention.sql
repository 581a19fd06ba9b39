-- The sweeper deletes finished task records after storage.task_retention.
CREATE INDEX tasks_by_finish ON tasks (finished_at) WHERE finished_at IS NOT NULL;
