-- Progress of a running task (steps done of steps), for DescribeAigcTaskStatus / List.
ALTER TABLE tasks ADD COLUMN step INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN steps INTEGER NOT NULL DEFAULT 0;
-- DescribeAigcTaskList: a key's tasks, newest first.
CREATE INDEX tasks_by_key ON tasks (secret_id, created_at);
