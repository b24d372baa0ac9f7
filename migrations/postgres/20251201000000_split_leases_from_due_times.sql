-- Two clocks (SPEC §10). `next_attempt_at` is when a pending message is due, on the business
-- clock (`--now` moves it); `claimed_until` is when a claim's lease ends, on the database
-- server's clock. A claim no longer overwrites the due time with the lease, so neither a `--now`
-- pass nor a host whose clock is off can move another pass's lease.
ALTER TABLE messages ADD COLUMN expired_leases INTEGER NOT NULL DEFAULT 0;
DROP INDEX messages_due;
CREATE INDEX messages_pending ON messages (channel, next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX messages_leased ON messages (channel, claimed_until) WHERE status = 'sending';

-- The rate limiter runs on the server's clock in nanoseconds, so rates above 1000/s are exact.
-- The old millisecond slot may have been pushed into the future by a `--now` pass: start afresh.
ALTER TABLE channel_state ADD COLUMN next_slot_ns BIGINT NOT NULL DEFAULT 0;
ALTER TABLE channel_state DROP COLUMN next_slot_ms;
