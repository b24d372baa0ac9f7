-- Two clocks (SPEC §10). `next_attempt_at` is when a pending message is due, on the business
-- clock (`--now` moves it); `claimed_until` is when a claim's lease ends, on the real clock. A
-- claim no longer overwrites the due time with the lease, so a `--now` pass cannot push a lease
-- into the future or past of a real pass.
ALTER TABLE messages ADD COLUMN expired_leases INTEGER NOT NULL DEFAULT 0;
DROP INDEX messages_due;
CREATE INDEX messages_pending ON messages (channel, next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX messages_leased ON messages (channel, claimed_until) WHERE status = 'sending';

-- The rate limiter runs on the real clock in nanoseconds, so rates above 1000/s are exact. The
-- old millisecond slot may have been pushed into the future by a `--now` pass: start afresh.
ALTER TABLE channel_state ADD COLUMN next_slot_ns INTEGER NOT NULL DEFAULT 0;
ALTER TABLE channel_state DROP COLUMN next_slot_ms;

-- Input dates that SQL cannot compare as written: not text, not a date SQLite reads, or a
-- timestamp with an offset (which date() would read as its UTC date). Generation reads these
-- few rows in Rust, as local dates in REMINDER_TIMEZONE, or reports them. The expressions must
-- match `odd_date` in src/store/sqlite.rs exactly, or the planner cannot use the indexes.
CREATE INDEX invoices_odd_due ON invoices (id) WHERE status = 'unpaid' AND (due_date IS NOT NULL AND (typeof(due_date) <> 'text' OR date(due_date) IS NULL OR due_date GLOB '*[0-9][Zz]' OR due_date GLOB '*[0-9][+-][0-9][0-9]:[0-9][0-9]' OR due_date GLOB '*[0-9][+-][0-9][0-9][0-9][0-9]'));
CREATE INDEX vehicles_odd_next ON vehicles (id) WHERE (next_visit_date IS NOT NULL AND (typeof(next_visit_date) <> 'text' OR date(next_visit_date) IS NULL OR next_visit_date GLOB '*[0-9][Zz]' OR next_visit_date GLOB '*[0-9][+-][0-9][0-9]:[0-9][0-9]' OR next_visit_date GLOB '*[0-9][+-][0-9][0-9][0-9][0-9]'));
CREATE INDEX vehicles_odd_last ON vehicles (id) WHERE next_visit_date IS NULL AND (last_visit_date IS NOT NULL AND (typeof(last_visit_date) <> 'text' OR date(last_visit_date) IS NULL OR last_visit_date GLOB '*[0-9][Zz]' OR last_visit_date GLOB '*[0-9][+-][0-9][0-9]:[0-9][0-9]' OR last_visit_date GLOB '*[0-9][+-][0-9][0-9][0-9][0-9]'));
