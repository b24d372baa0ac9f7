-- Scheduled messages speak seed 004's language: `pending` (waiting for its time), `processing`
-- (queued, not delivered yet), `sent`, `failed`, `cancelled`; a recurring message goes back to
-- `pending` with its next run. The last delivery is kept on the row (`error`, `message_id`,
-- `sent_at`). `active` is still accepted on insert, as `pending`. SQLite cannot change a CHECK
-- constraint, so the table is rebuilt; rows keep their ids.
CREATE TABLE scheduled_messages_new (
    id           INTEGER PRIMARY KEY,
    contact_id   INTEGER,
    channel      TEXT NOT NULL DEFAULT 'whatsapp',
    body         TEXT NOT NULL DEFAULT '',
    media_url    TEXT,
    caption      TEXT,
    scheduled_at TEXT NOT NULL,
    recurrence   TEXT NOT NULL DEFAULT 'none'
                 CHECK (recurrence IN ('none', 'daily', 'weekly', 'monthly')),
    next_run_at  TEXT,
    status       TEXT NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'processing', 'sent', 'failed', 'cancelled', 'active')),
    error        TEXT,
    message_id   TEXT,
    sent_at      TEXT,
    -- The WhatsApp connection (WHATSAPP_CONNECTIONS) that sends it; NULL is the default one.
    connection   TEXT,
    created_by   TEXT,
    demo_key     TEXT UNIQUE,
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
INSERT INTO scheduled_messages_new (id, contact_id, channel, body, media_url, caption, scheduled_at,
    recurrence, next_run_at, status, error, message_id, sent_at, created_by, demo_key, created_at)
SELECT s.id, s.contact_id, s.channel, s.body, s.media_url, s.caption, s.scheduled_at,
    s.recurrence, s.next_run_at,
    CASE s.status
        WHEN 'active' THEN 'pending'
        WHEN 'done' THEN COALESCE((SELECT CASE m.status WHEN 'sent' THEN 'sent'
                                          WHEN 'cancelled' THEN 'cancelled'
                                          WHEN 'pending' THEN 'processing'
                                          WHEN 'sending' THEN 'processing' ELSE 'failed' END
                                   FROM messages m WHERE m.kind = 'scheduled' AND m.subject_id = s.id
                                   ORDER BY m.id DESC LIMIT 1), 'sent')
        ELSE s.status END,
    (SELECT m.last_error FROM messages m WHERE m.kind = 'scheduled' AND m.subject_id = s.id
     ORDER BY m.id DESC LIMIT 1),
    (SELECT m.provider_message_id FROM messages m WHERE m.kind = 'scheduled' AND m.subject_id = s.id
     ORDER BY m.id DESC LIMIT 1),
    (SELECT m.sent_at FROM messages m WHERE m.kind = 'scheduled' AND m.subject_id = s.id
     ORDER BY m.id DESC LIMIT 1),
    s.created_by, s.demo_key, s.created_at
FROM scheduled_messages s;
DROP TABLE scheduled_messages;
ALTER TABLE scheduled_messages_new RENAME TO scheduled_messages;
CREATE INDEX scheduled_messages_due ON scheduled_messages (unixepoch(COALESCE(next_run_at, scheduled_at)))
    WHERE status IN ('pending', 'active', 'processing');
CREATE INDEX scheduled_messages_contact ON scheduled_messages (contact_id);

-- A contact's WhatsApp connection (WHATSAPP_CONNECTIONS); NULL is the default one.
ALTER TABLE contacts ADD COLUMN whatsapp_connection TEXT;

-- Outbox rows carry their WhatsApp connection, and an occurrence may go out on several channels
-- at once (`whatsapp+email`). The first channel's row is the occurrence's lead (fanout 0): it
-- is generated once whatever the contact prefers later; the others (fanout 1) are generated only
-- beside a new lead, so a changed preference never sends a stage again on a new channel.
ALTER TABLE messages ADD COLUMN connection TEXT;
ALTER TABLE messages ADD COLUMN fanout INTEGER NOT NULL DEFAULT 0;
DROP INDEX messages_generated_once;
CREATE UNIQUE INDEX messages_generated_once ON messages (dedup_key) WHERE origin = 'rule' AND fanout = 0;
-- Claims when only scheduled messages may go out (the rules' send window is closed).
CREATE INDEX messages_pending_scheduled ON messages (channel, next_attempt_at, id)
    WHERE status = 'pending' AND kind = 'scheduled';

-- A WhatsApp connection's monthly quota (`…_MONTHLY_QUOTA`), reserved as sends are claimed so
-- that several passes together never exceed it; `channel` is the route's key (`whatsapp:gudang`).
ALTER TABLE channel_state ADD COLUMN quota_month TEXT;
ALTER TABLE channel_state ADD COLUMN quota_used BIGINT NOT NULL DEFAULT 0;
