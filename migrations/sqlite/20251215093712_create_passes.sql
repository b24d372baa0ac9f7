-- One row per pass (`run`, `generate`, `send`; dry runs are not passes): when it started and
-- finished on the real clock, where it ran, what it did and why it failed. `status` reads the
-- latest to answer "did the scheduler run?"; `prune` removes old ones.
CREATE TABLE passes (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    command      TEXT NOT NULL,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    -- The business instant the pass evaluated when `--now` set one; NULL for a real-clock pass.
    business_now TEXT,
    started_at   TEXT NOT NULL,
    finished_at  TEXT,
    generated    INTEGER NOT NULL DEFAULT 0,
    sent         INTEGER NOT NULL DEFAULT 0,
    failed       INTEGER NOT NULL DEFAULT 0,
    retried      INTEGER NOT NULL DEFAULT 0,
    deferred     INTEGER NOT NULL DEFAULT 0,
    cancelled    INTEGER NOT NULL DEFAULT 0,
    skipped      INTEGER NOT NULL DEFAULT 0,
    error        TEXT
);
CREATE INDEX passes_started ON passes (started_at);
