-- Every query that looks a message up by its subject (a paid invoice's reminders, a scheduled
-- row's queued occurrences) asks for `pending` ones. Leaving `sending` out of the index means a
-- claim, which turns `pending` into `sending`, adds no entry to it.
DROP INDEX messages_open_subject;
CREATE INDEX messages_open_subject ON messages (kind, subject_id) WHERE status = 'pending';
