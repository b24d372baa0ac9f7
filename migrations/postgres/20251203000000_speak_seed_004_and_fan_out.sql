-- Scheduled messages speak seed 004's language: `pending` (waiting for its time), `processing`
-- (queued, not delivered yet), `sent`, `failed`, `cancelled`; a recurring message goes back to
-- `pending` with its next run. The last delivery is kept on the row (`error`, `message_id`,
-- `sent_at`). `active` is still accepted on insert, as `pending`.
ALTER TABLE scheduled_messages DROP CONSTRAINT scheduled_messages_status_check;
ALTER TABLE scheduled_messages ADD COLUMN error TEXT;
ALTER TABLE scheduled_messages ADD COLUMN message_id TEXT;
ALTER TABLE scheduled_messages ADD COLUMN sent_at TIMESTAMPTZ;
-- The WhatsApp connection (WHATSAPP_CONNECTIONS) that sends it; NULL is the default one.
ALTER TABLE scheduled_messages ADD COLUMN connection TEXT;
UPDATE scheduled_messages s SET
    status = CASE s.status
        WHEN 'active' THEN 'pending'
        WHEN 'done' THEN COALESCE((SELECT CASE m.status WHEN 'sent' THEN 'sent'
                                          WHEN 'cancelled' THEN 'cancelled'
                                          WHEN 'pending' THEN 'processing'
                                          WHEN 'sending' THEN 'processing' ELSE 'failed' END
                                   FROM messages m WHERE m.kind = 'scheduled' AND m.subject_id = s.id
                                   ORDER BY m.id DESC LIMIT 1), 'sent')
        ELSE s.status END,
    error = (SELECT m.last_error FROM messages m WHERE m.kind = 'scheduled' AND m.subject_id = s.id
             ORDER BY m.id DESC LIMIT 1),
    message_id = (SELECT m.provider_message_id FROM messages m
                  WHERE m.kind = 'scheduled' AND m.subject_id = s.id ORDER BY m.id DESC LIMIT 1),
    sent_at = (SELECT m.sent_at FROM messages m WHERE m.kind = 'scheduled' AND m.subject_id = s.id
               ORDER BY m.id DESC LIMIT 1);
ALTER TABLE scheduled_messages ALTER COLUMN status SET DEFAULT 'pending';
ALTER TABLE scheduled_messages ADD CONSTRAINT scheduled_messages_status_check
    CHECK (status IN ('pending', 'processing', 'sent', 'failed', 'cancelled', 'active'));
DROP INDEX scheduled_messages_due;
CREATE INDEX scheduled_messages_due ON scheduled_messages ((COALESCE(next_run_at, scheduled_at)))
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
