-- Why a task ended FAIL, as a short code (errors.Reason), beside its message: the faces, the
-- console and the metrics read this instead of searching the message's text. '' for other states.
ALTER TABLE tasks ADD COLUMN reason TEXT NOT NULL DEFAULT '';
