-- Input tables are the integration surface: a business's app may write them directly, so every
-- id has a default and every column not required by the rules has one too. Dates are ISO-8601
-- text ('2025-11-18'); input timestamps may carry any offset ('2025-11-18T09:00:00+07:00') and
-- are compared through unixepoch(). The outbox's own timestamps are fixed-width UTC text
-- ('2025-11-18T02:00:00.000Z') so that they compare correctly as text.

CREATE TABLE contacts (
    id               INTEGER PRIMARY KEY,
    name             TEXT NOT NULL DEFAULT '',
    phone            TEXT,
    email            TEXT,
    telegram_chat_id TEXT,
    channels         TEXT NOT NULL DEFAULT 'whatsapp',
    opted_out_at     TEXT,
    demo_key         TEXT UNIQUE,
    created_at       TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE invoices (
    id         INTEGER PRIMARY KEY,
    number     TEXT NOT NULL DEFAULT '',
    contact_id INTEGER,
    amount     INTEGER NOT NULL DEFAULT 0,
    due_date   TEXT NOT NULL,
    status     TEXT NOT NULL DEFAULT 'unpaid' CHECK (status IN ('unpaid', 'paid', 'cancelled')),
    paid_at    TEXT,
    demo_key   TEXT UNIQUE,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX invoices_unpaid_due ON invoices (date(due_date)) WHERE status = 'unpaid';

CREATE TABLE vehicles (
    id              INTEGER PRIMARY KEY,
    contact_id      INTEGER,
    plate_no        TEXT NOT NULL DEFAULT '',
    last_visit_date TEXT,
    next_visit_date TEXT,
    demo_key        TEXT UNIQUE,
    created_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE scheduled_messages (
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
    status       TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'done', 'cancelled')),
    created_by   TEXT,
    demo_key     TEXT UNIQUE,
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX scheduled_messages_due ON scheduled_messages (unixepoch(COALESCE(next_run_at, scheduled_at)))
    WHERE status = 'active';

CREATE TABLE messages (
    id                  INTEGER PRIMARY KEY,
    kind                TEXT NOT NULL CHECK (kind IN ('dunning', 'maintenance', 'scheduled', 'test')),
    subject_id          INTEGER,
    stage               TEXT,
    event_date          TEXT,
    dedup_key           TEXT NOT NULL,
    -- 'rule' rows come from generation, at most one per occurrence; 'fallback' rows carry the
    -- same occurrence on the contact's next channel; 'manual' rows come from test commands.
    origin              TEXT NOT NULL DEFAULT 'rule' CHECK (origin IN ('rule', 'fallback', 'manual')),
    contact_id          INTEGER,
    channel             TEXT NOT NULL,
    provider            TEXT,
    recipient           TEXT,
    subject             TEXT,
    body                TEXT,
    media_url           TEXT,
    status              TEXT NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'cancelled', 'skipped')),
    attempts            INTEGER NOT NULL DEFAULT 0,
    next_attempt_at     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    claimed_until       TEXT,
    claimed_by          TEXT,
    last_error          TEXT,
    provider_message_id TEXT,
    created_at          TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    sent_at             TEXT,
    UNIQUE (dedup_key, channel)
);
-- Each occurrence is generated once, whatever channel the contact prefers by then.
CREATE UNIQUE INDEX messages_generated_once ON messages (dedup_key) WHERE origin = 'rule';
CREATE INDEX messages_due ON messages (channel, next_attempt_at, id)
    WHERE status IN ('pending', 'sending');
CREATE INDEX messages_open_subject ON messages (kind, subject_id) WHERE status IN ('pending', 'sending');

CREATE TABLE delivery_attempts (
    id                  INTEGER PRIMARY KEY,
    message_id          INTEGER NOT NULL,
    attempt             INTEGER NOT NULL,
    channel             TEXT NOT NULL,
    provider            TEXT,
    outcome             TEXT NOT NULL,
    error               TEXT,
    provider_message_id TEXT,
    claimed_by          TEXT,
    at                  TEXT NOT NULL
);
CREATE INDEX delivery_attempts_message ON delivery_attempts (message_id);

CREATE TABLE channel_state (
    channel      TEXT PRIMARY KEY,
    next_slot_ms INTEGER NOT NULL DEFAULT 0,
    down_reason  TEXT,
    down_since   TEXT
);
