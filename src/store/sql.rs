//! The SQL that both backends run as written: each statement once, with `$N` placeholders
//! (sqlx's SQLite driver reads `$N` as argument N, as PostgreSQL does). What must differ per
//! dialect stays in `postgres.rs` and `sqlite.rs`: claims, result writes, the generation
//! wrappers, slot locking, the store clock and migrations.
//!
//! The functions here take the connection, or the transaction's connection, that the backend
//! opened; the backend decides what runs in one transaction and what it does on failure.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Type};

use super::{
    beside, count, retry_plan, PassCounts, PassStart, Retried, RetryCandidate, RetrySelect,
    Standing,
};
use super::{
    ChannelDown, DemoData, Failure, NewMessage, NewScheduled, Result, ScheduledEdit, SeedCounts,
    SlotGrant, StatusCount, TestContact,
};
use crate::domain::channel::Route;

/// What a backend stores differently from the other, for the statements written once.
pub(crate) trait Dialect: Database {
    /// An outbox timestamp as this backend stores it: `timestamptz` on PostgreSQL, fixed-width
    /// UTC text on SQLite (so that text order is time order).
    type Instant: for<'q> Encode<'q, Self> + Type<Self> + Send + Sync + 'static;

    fn instant(at: DateTime<Utc>) -> Self::Instant;

    /// How many rows a statement wrote (each driver has its own result type).
    fn rows_affected(done: &Self::QueryResult) -> u64;

    /// What a `SELECT` inside a write transaction adds to lock the rows it reads. SQLite's
    /// `BEGIN IMMEDIATE` has taken the database's write lock already.
    const FOR_UPDATE: &'static str;

    /// A list of ids, and one of keys, bound as one value: an array on PostgreSQL, JSON text
    /// on SQLite.
    type Ids: for<'q> Encode<'q, Self> + Type<Self> + Send + Sync + 'static;
    type Keys: for<'q> Encode<'q, Self> + Type<Self> + Send + Sync + 'static;

    fn ids(ids: &[i64]) -> Self::Ids;

    fn keys(keys: &[&str]) -> Self::Keys;

    /// `expr` is one of the list bound as `param`.
    fn one_of(expr: &str, param: &str) -> String;

    /// The store's real clock, as SQL: what leases and passes are timed by (SPEC §10), never
    /// the business clock `--now`.
    const REAL_NOW: &'static str;
}

/// Whether a message can be claimed: pending and due by the business clock `$1`, or held by a
/// pass whose lease has run out on the store's real clock.
fn due<DB: Dialect>() -> String {
    format!(
        "((status = 'pending' AND next_attempt_at <= $1) \
         OR (status = 'sending' AND claimed_until <= {}))",
        DB::REAL_NOW
    )
}

/// `send --dry-run`: up to `$3` of what a pass could claim on channel `$2` now, in claim order.
pub(crate) fn preview_due<DB: Dialect>() -> String {
    format!(
        "SELECT id, kind, subject_id, stage, channel, status, last_error AS error, dedup_key, \
             contact_id, event_date, connection FROM messages \
         WHERE channel = $2 AND {} ORDER BY next_attempt_at, id LIMIT $3",
        due::<DB>()
    )
}

/// [`super::Store::has_open_messages`]. One branch per status, so that each reads the head of
/// its own partial index (`messages_pending`, `messages_leased`): no index covers
/// `status IN ('pending', 'sending')`, and that form reads the whole table, sent history and
/// all, on every idle tick.
pub const OPEN_MESSAGES: &str = "SELECT count(*) FROM (\
    SELECT 1 FROM messages WHERE status = 'pending' \
    UNION ALL SELECT 1 FROM messages WHERE status = 'sending' LIMIT 1) x";

/// The columns of `passes` that [`super::PassRecord`] reads.
const PASS_COLUMNS: &str = "id, command, host, pid, business_now, started_at, \
    finished_at, generated, sent, failed, retried, deferred, cancelled, skipped, error";

/// The latest pass (`filter` empty), or the latest that matches `filter`.
pub(crate) fn latest_pass(filter: &str) -> String {
    format!("SELECT {PASS_COLUMNS} FROM passes {filter} ORDER BY started_at DESC, id DESC LIMIT 1")
}

/// The filter of the latest pass that finished well.
pub(crate) const PASS_OK: &str = "WHERE finished_at IS NOT NULL AND error IS NULL";

/// The retry candidates' columns, and the failure time `--failed-since` compares.
const RETRY_COLUMNS: &str = "m.id, m.status, m.dedup_key, m.channel, m.origin, \
    m.recipient";
const FAILED_AT: &str =
    "COALESCE((SELECT max(a.at) FROM delivery_attempts a WHERE a.message_id = m.id), m.created_at)";

/// The messages `prune` deletes (`$1` … `$3` are [`super::PruneCut::before`],
/// `dunning_due_until`, `visit_before`; `occurrence` and `due` are the dialect's epoch seconds of
/// a scheduled message's occurrence (from its dedup key) and of its row's next run). An
/// occurrence goes when every row of it is finished and untouched since the cut, and no pass can
/// generate it again: a test message; a dunning reminder every stage of whose due date has ended;
/// a maintenance reminder whose visit date has passed; a scheduled occurrence whose row is gone,
/// finished, or already moved past it.
pub(crate) fn prune_keys(occurrence: &str, due: &str) -> String {
    format!(
        "SELECT m.dedup_key FROM messages m \
         WHERE m.kind = 'test' \
            OR (m.kind = 'dunning' AND m.event_date <= $2) \
            OR (m.kind = 'maintenance' AND m.event_date < $3) \
            OR (m.kind = 'scheduled' AND NOT EXISTS (SELECT 1 FROM scheduled_messages s \
                WHERE s.id = m.subject_id AND s.status IN ('pending', 'active', 'processing') \
                  AND ({due} IS NULL OR {due} <= {occurrence}))) \
         EXCEPT \
         SELECT m.dedup_key FROM messages m \
         WHERE m.status NOT IN ('sent', 'failed', 'cancelled', 'skipped') \
            OR m.created_at >= $1 OR m.sent_at >= $1 \
            OR EXISTS (SELECT 1 FROM delivery_attempts a WHERE a.message_id = m.id AND a.at >= $1)"
    )
}

/// `prune`'s two deletes of messages, attempts first, over [`prune_keys`].
pub(crate) fn prune_deletes(keys: &str) -> [String; 2] {
    [
        format!(
            "DELETE FROM delivery_attempts WHERE message_id IN \
             (SELECT id FROM messages WHERE dedup_key IN ({keys}))"
        ),
        format!("DELETE FROM messages WHERE dedup_key IN ({keys})"),
    ]
}

/// A generation's "the occurrence is not in the outbox yet" (`u` is the candidate).
pub(crate) const NOT_QUEUED: &str =
    "NOT EXISTS (SELECT 1 FROM messages m WHERE m.dedup_key = u.dedup_key)";

/// `schedule list`, filtered by any of id (`$1`), contact (`$2`) and creator (`$3`).
pub(crate) const LIST_SCHEDULED: &str =
    "SELECT s.id, s.contact_id, c.name AS contact_name, s.channel, s.connection, s.body, \
         s.media_url, s.caption, s.recurrence, s.status, \
         COALESCE(s.next_run_at, s.scheduled_at) AS next_run, s.error, s.message_id, \
         s.sent_at, s.created_by \
     FROM scheduled_messages s LEFT JOIN contacts c ON c.id = s.contact_id \
     WHERE ($1 IS NULL OR s.id = $1) AND ($2 IS NULL OR s.contact_id = $2) \
       AND ($3 IS NULL OR s.created_by = $3) \
     ORDER BY s.id DESC";

/// `retry --failed-since`: the failed messages whose failure is at or after `$1`, locked.
fn failed_since<DB: Dialect>() -> String {
    format!(
        "SELECT {RETRY_COLUMNS} FROM messages m \
         WHERE m.status = 'failed' AND {FAILED_AT} >= $1 ORDER BY m.id{}",
        DB::FOR_UPDATE
    )
}

/// `retry`: puts the failed messages `select` names back as `pending` with fresh attempts at
/// `now`, recording the change in `delivery_attempts`, unless [`retry_plan`] refuses them. Run
/// it in a write transaction.
pub(crate) async fn retry_failed<DB>(
    conn: &mut DB::Connection,
    select: &RetrySelect,
    now: DateTime<Utc>,
) -> Result<Retried>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'r> RetryCandidate: FromRow<'r, DB::Row>,
    for<'r> Standing: FromRow<'r, DB::Row>,
{
    let (named, candidates): (Option<&[i64]>, Vec<RetryCandidate>) = match select {
        RetrySelect::Ids(ids) => (
            Some(ids),
            sqlx::query_as::<DB, RetryCandidate>(&format!(
                "SELECT {RETRY_COLUMNS} FROM messages m WHERE {} ORDER BY m.id{}",
                DB::one_of("m.id", "$1"),
                DB::FOR_UPDATE
            ))
            .bind(DB::ids(ids))
            .fetch_all(&mut *conn)
            .await?,
        ),
        RetrySelect::FailedSince(since) => (
            None,
            sqlx::query_as::<DB, RetryCandidate>(&failed_since::<DB>())
                .bind(DB::instant(*since))
                .fetch_all(&mut *conn)
                .await?,
        ),
    };
    let keys: Vec<&str> = candidates.iter().map(|c| c.dedup_key.as_str()).collect();
    // The rows, sent or queued, of the candidates' occurrences, read once for all of them.
    let standing = sqlx::query_as::<DB, Standing>(&format!(
        "SELECT dedup_key, id, channel, status, origin FROM messages \
         WHERE status IN ('pending', 'sending', 'sent') AND {}",
        DB::one_of("dedup_key", "$1")
    ))
    .bind(DB::keys(&keys))
    .fetch_all(&mut *conn)
    .await?;
    let (chosen, refused) = retry_plan(named, &candidates, &|c| beside(&standing, c));
    let ids: Vec<i64> = chosen.iter().map(|c| c.id).collect();
    let chosen_ids = DB::one_of("id", "$1");
    sqlx::query::<DB>(&format!(
        "INSERT INTO delivery_attempts (message_id, attempt, channel, provider, outcome, error, \
             at) \
         SELECT id, attempts, channel, provider, 'requeued', \
             'put back as pending by retry, after: ' || COALESCE(last_error, 'no reason'), $2 \
         FROM messages WHERE {chosen_ids}"
    ))
    .bind(DB::ids(&ids))
    .bind(DB::instant(now))
    .execute(&mut *conn)
    .await?;
    sqlx::query::<DB>(&format!(
        "UPDATE messages SET status = 'pending', attempts = 0, next_attempt_at = $2, \
             claimed_until = NULL, claimed_by = NULL, last_error = NULL \
         WHERE {chosen_ids} AND status = 'failed'"
    ))
    .bind(DB::ids(&ids))
    .bind(DB::instant(now))
    .execute(&mut *conn)
    .await?;
    sqlx::query::<DB>(&format!(
        "UPDATE scheduled_messages SET status = 'processing' \
         WHERE status = 'failed' AND id IN (SELECT subject_id FROM messages \
             WHERE {chosen_ids} AND kind = 'scheduled')"
    ))
    .bind(DB::ids(&ids))
    .execute(&mut *conn)
    .await?;
    let retried = chosen.iter().map(|c| (c.id, c.channel.clone(), c.recipient.clone())).collect();
    Ok(Retried { retried, refused })
}

/// A dry run of `cancel_settled`: the pending dunning reminders whose invoice is settled.
pub(crate) const SETTLED_PREVIEW: &str =
    "SELECT m.id, m.kind, m.subject_id, m.stage, m.channel, 'cancelled' AS status, \
         'invoice is ' || i.status AS error, m.dedup_key, m.contact_id, m.event_date, \
         m.connection \
     FROM messages m JOIN invoices i ON i.id = m.subject_id \
     WHERE m.kind = 'dunning' AND m.status = 'pending' AND i.status <> 'unpaid'";

/// `cancel_settled`: cancels the pending dunning reminders whose invoice is settled, and returns
/// them as [`SETTLED_PREVIEW`] shows them.
pub(crate) const SETTLED_CANCEL: &str =
    "UPDATE messages SET status = 'cancelled', last_error = 'invoice is ' || i.status \
     FROM invoices i \
     WHERE messages.kind = 'dunning' AND messages.status = 'pending' \
       AND i.id = messages.subject_id AND i.status <> 'unpaid' \
     RETURNING messages.id, messages.kind, messages.subject_id, messages.stage, \
         messages.channel, messages.status, messages.last_error AS error, \
         messages.dedup_key, messages.contact_id, messages.event_date, messages.connection";

/// A route's limiter and quota row, made on first use.
pub(crate) const ENSURE_ROUTE: &str =
    "INSERT INTO channel_state (channel) VALUES ($1) ON CONFLICT DO NOTHING";

/// Moves a route's next free slot past a grant (in the slot lock's transaction).
pub(crate) const TAKE_SLOTS: &str = "UPDATE channel_state SET next_slot_ns = $2 WHERE channel = $1";

/// WhatsApp's due messages by connection, for the per-connection lanes.
pub(crate) async fn due_by_connection<DB>(
    conn: &mut DB::Connection,
    now: DateTime<Utc>,
) -> Result<Vec<(Option<String>, u64)>>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'r> (Option<String>, i64): FromRow<'r, DB::Row>,
{
    let rows = sqlx::query_as::<DB, (Option<String>, i64)>(&format!(
        "SELECT connection, count(*) FROM messages WHERE channel = 'whatsapp' AND {} \
         GROUP BY connection ORDER BY connection",
        due::<DB>()
    ))
    .bind(DB::instant(now))
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(|(c, n)| (c, n.max(0) as u64)).collect())
}

/// Marks a route down with `reason` (since `now`, unless it was down already), or up with
/// `None`.
pub(crate) async fn set_channel_down<DB>(
    conn: &mut DB::Connection,
    route: &Route,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> Result<()>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<DB::Instant>: Encode<'q, DB> + Type<DB>,
{
    sqlx::query::<DB>(
        "INSERT INTO channel_state (channel, down_reason, down_since) VALUES ($1, $2, $3) \
         ON CONFLICT (channel) DO UPDATE SET down_reason = excluded.down_reason, \
             down_since = CASE WHEN excluded.down_reason IS NULL THEN NULL \
                 ELSE COALESCE(channel_state.down_since, excluded.down_since) END",
    )
    .bind(route.key())
    .bind(reason)
    .bind(reason.map(|_| DB::instant(now)))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records that a pass started, on the store's real clock; returns its id.
pub(crate) async fn begin_pass<DB>(conn: &mut DB::Connection, start: &PassStart) -> Result<i64>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<DB::Instant>: Encode<'q, DB> + Type<DB>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
{
    Ok(sqlx::query_scalar::<DB, i64>(&format!(
        "INSERT INTO passes (command, host, pid, business_now, started_at) \
         VALUES ($1, $2, $3, $4, {}) RETURNING id",
        DB::REAL_NOW
    ))
    .bind(start.command)
    .bind(&start.host)
    .bind(i64::from(start.pid))
    .bind(start.business_now.map(DB::instant))
    .fetch_one(&mut *conn)
    .await?)
}

/// Records how a pass ended, on the store's real clock.
pub(crate) async fn finish_pass<DB>(
    conn: &mut DB::Connection,
    id: i64,
    counts: &PassCounts,
    error: Option<&str>,
) -> Result<()>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
{
    sqlx::query::<DB>(&format!(
        "UPDATE passes SET finished_at = {}, generated = $2, sent = $3, failed = $4, \
             retried = $5, deferred = $6, cancelled = $7, skipped = $8, error = $9 \
         WHERE id = $1",
        DB::REAL_NOW
    ))
    .bind(id)
    .bind(count(counts.generated))
    .bind(count(counts.sent))
    .bind(count(counts.failed))
    .bind(count(counts.retried))
    .bind(count(counts.deferred))
    .bind(count(counts.cancelled))
    .bind(count(counts.skipped))
    .bind(error)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// How many messages a pass could claim on `route` now.
pub(crate) async fn count_due<DB>(
    conn: &mut DB::Connection,
    route: &Route,
    now: DateTime<Utc>,
) -> Result<u64>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
{
    let n = sqlx::query_scalar::<DB, i64>(&format!(
        "SELECT count(*) FROM messages \
         WHERE channel = $2 AND connection IS NOT DISTINCT FROM $3 AND {}",
        due::<DB>()
    ))
    .bind(DB::instant(now))
    .bind(route.channel.as_str())
    .bind(route.connection.as_deref())
    .fetch_one(&mut *conn)
    .await?;
    Ok(n.max(0) as u64)
}

/// Gives back the part of a monthly quota reservation a pass did not use.
pub(crate) async fn return_quota<DB>(
    conn: &mut DB::Connection,
    route: &Route,
    month: &str,
    unused: u32,
) -> Result<()>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    sqlx::query::<DB>(
        "UPDATE channel_state \
         SET quota_used = CASE WHEN quota_used > $3 THEN quota_used - $3 ELSE 0 END \
         WHERE channel = $1 AND quota_month = $2",
    )
    .bind(route.key())
    .bind(month)
    .bind(i64::from(unused))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Gives back the slots a pass did not use, unless another pass has reserved after it.
pub(crate) async fn return_slots<DB>(
    conn: &mut DB::Connection,
    route: &Route,
    grant: SlotGrant,
    unused: u32,
) -> Result<()>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    sqlx::query::<DB>(
        "UPDATE channel_state SET next_slot_ns = next_slot_ns - $3 \
         WHERE channel = $1 AND next_slot_ns = $2",
    )
    .bind(route.key())
    .bind(grant.end_ns)
    .bind(i64::from(unused).saturating_mul(grant.interval_ns))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// What `status` reads the same way on both backends: the counts, the latest `failures`
/// problems, the channels that are down (`now` stands for a missing `down_since`), and what is
/// due now on each channel.
pub(crate) struct StatusRows {
    pub counts: Vec<StatusCount>,
    pub failures: Vec<Failure>,
    pub down: Vec<ChannelDown>,
    pub due: Vec<(String, i64)>,
}

pub(crate) async fn status_rows<DB>(
    conn: &mut DB::Connection,
    failures: i64,
    now: DateTime<Utc>,
) -> Result<StatusRows>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'r> StatusCount: FromRow<'r, DB::Row>,
    for<'r> Failure: FromRow<'r, DB::Row>,
    for<'r> (String, String, Option<DateTime<Utc>>): FromRow<'r, DB::Row>,
    for<'r> (String, i64): FromRow<'r, DB::Row>,
{
    let counts = sqlx::query_as::<DB, StatusCount>(
        "SELECT kind, status, channel, count(*) AS count FROM messages \
         GROUP BY kind, status, channel ORDER BY kind, status, channel",
    )
    .fetch_all(&mut *conn)
    .await?;
    let problems = sqlx::query_as::<DB, Failure>(&format!(
        "SELECT m.id, m.kind, m.stage, m.channel, m.recipient, m.status, \
             m.last_error AS error, {FAILED_AT} AS at \
         FROM messages m WHERE m.status = 'failed' \
             OR (m.status IN ('pending', 'skipped') AND m.last_error IS NOT NULL) \
         ORDER BY m.id DESC LIMIT $1"
    ))
    .bind(failures)
    .fetch_all(&mut *conn)
    .await?;
    let down = sqlx::query_as::<DB, (String, String, Option<DateTime<Utc>>)>(
        "SELECT channel, down_reason, down_since FROM channel_state \
         WHERE down_reason IS NOT NULL ORDER BY channel",
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|(channel, reason, since)| ChannelDown { channel, reason, since: since.unwrap_or(now) })
    .collect();
    let due = sqlx::query_as::<DB, (String, i64)>(&format!(
        "SELECT channel, count(*) FROM messages WHERE {} GROUP BY channel ORDER BY channel",
        due::<DB>()
    ))
    .bind(DB::instant(now))
    .fetch_all(&mut *conn)
    .await?;
    Ok(StatusRows { counts, failures: problems, down, due })
}

/// Queues hand-made messages (`test-whatsapp`, `test-dunning`): one row each, unless its
/// occurrence is queued on that channel already. Returns the ids of the rows made.
pub(crate) async fn insert_messages<DB>(
    conn: &mut DB::Connection,
    rows: &[NewMessage],
    now: DateTime<Utc>,
) -> Result<Vec<i64>>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> NaiveDate: Encode<'q, DB> + Type<DB>,
    for<'q> Option<NaiveDate>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
{
    let mut ids = Vec::new();
    for r in rows {
        let id = sqlx::query_scalar::<DB, i64>(
            "INSERT INTO messages (kind, subject_id, stage, event_date, dedup_key, origin, \
                 contact_id, channel, recipient, body, status, next_attempt_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, 'manual', $6, $7, $8, $9, 'pending', $10, $10) \
             ON CONFLICT (dedup_key, channel) DO NOTHING RETURNING id",
        )
        .bind(r.kind.as_str())
        .bind(r.subject_id)
        .bind(&r.stage)
        .bind(r.event_date)
        .bind(&r.dedup_key)
        .bind(r.contact_id)
        .bind(&r.channel)
        .bind(&r.recipient)
        .bind(&r.body)
        .bind(DB::instant(now))
        .fetch_optional(&mut *conn)
        .await?;
        ids.extend(id);
    }
    Ok(ids)
}

/// Adds scheduled messages (`schedule add`); returns their ids.
pub(crate) async fn add_scheduled<DB>(
    conn: &mut DB::Connection,
    rows: &[NewScheduled],
) -> Result<Vec<i64>>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
    for<'q> Option<DB::Instant>: Encode<'q, DB> + Type<DB>,
{
    let mut ids = Vec::new();
    for r in rows {
        let id = sqlx::query_scalar::<DB, i64>(
            "INSERT INTO scheduled_messages (contact_id, channel, body, media_url, caption, \
                 scheduled_at, next_run_at, recurrence, connection, created_by, status) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'pending') RETURNING id",
        )
        .bind(r.contact_id)
        .bind(&r.channel)
        .bind(&r.body)
        .bind(&r.media_url)
        .bind(&r.caption)
        .bind(DB::instant(r.scheduled_at))
        .bind(r.next_run_at.map(DB::instant))
        .bind(&r.recurrence)
        .bind(&r.connection)
        .bind(&r.created_by)
        .fetch_one(&mut *conn)
        .await?;
        ids.push(id);
    }
    Ok(ids)
}

/// `schedule edit`: changes what `edit` names, and moves a queued occurrence that has not gone
/// out to the new time with its message.
pub(crate) async fn edit_scheduled<DB>(
    conn: &mut DB::Connection,
    id: i64,
    edit: &ScheduledEdit,
) -> Result<()>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    for<'q> Option<DB::Instant>: Encode<'q, DB> + Type<DB>,
{
    let (at, next) = edit.timing.map_or((None, None), |(a, n)| (Some(a), n));
    sqlx::query::<DB>(
        "UPDATE scheduled_messages SET body = COALESCE($2, body), \
             channel = COALESCE($3, channel), \
             media_url = CASE WHEN $4 THEN $5 ELSE media_url END, \
             caption = CASE WHEN $6 THEN $7 ELSE caption END, \
             connection = CASE WHEN $8 THEN $9 ELSE connection END, \
             recurrence = COALESCE($10, recurrence), \
             scheduled_at = COALESCE($11, scheduled_at), \
             next_run_at = CASE WHEN $11 IS NOT NULL THEN $12 ELSE next_run_at END, \
             status = COALESCE($13, status) \
         WHERE id = $1",
    )
    .bind(id)
    .bind(&edit.body)
    .bind(&edit.channel)
    .bind(edit.media_url.is_some())
    .bind(edit.media_url.clone().flatten())
    .bind(edit.caption.is_some())
    .bind(edit.caption.clone().flatten())
    .bind(edit.connection.is_some())
    .bind(edit.connection.clone().flatten())
    .bind(&edit.recurrence)
    .bind(at.map(DB::instant))
    .bind(next.map(DB::instant))
    .bind(&edit.status)
    .execute(&mut *conn)
    .await?;
    if let Some(at) = at {
        sqlx::query::<DB>(
            "UPDATE messages SET next_attempt_at = $2 \
             WHERE kind = 'scheduled' AND subject_id = $1 AND status = 'pending'",
        )
        .bind(id)
        .bind(DB::instant(next.unwrap_or(at)))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// `schedule cancel`: cancels the scheduled message and what it has queued that has not gone
/// out; returns how many queued messages were cancelled.
pub(crate) async fn cancel_scheduled<DB>(
    conn: &mut DB::Connection,
    id: i64,
    by: Option<&str>,
) -> Result<u64>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    let reason = match by {
        Some(user) => format!("the scheduled message was cancelled by {user}"),
        None => "the scheduled message was cancelled".to_string(),
    };
    sqlx::query::<DB>("UPDATE scheduled_messages SET status = 'cancelled' WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    let n = sqlx::query::<DB>(
        "UPDATE messages SET status = 'cancelled', last_error = $2 \
         WHERE kind = 'scheduled' AND subject_id = $1 AND status = 'pending'",
    )
    .bind(id)
    .bind(reason)
    .execute(&mut *conn)
    .await
    .map(|done| DB::rows_affected(&done))?;
    Ok(n)
}

/// `seed`: adds the demo rows that are not there yet (by `demo_key`), after removing every demo
/// row and what was generated for it when `reset` is set. Run it in one transaction.
pub(crate) async fn seed<DB>(
    conn: &mut DB::Connection,
    demo: &DemoData,
    reset: bool,
) -> Result<SeedCounts>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> NaiveDate: Encode<'q, DB> + Type<DB>,
    for<'q> Option<NaiveDate>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
{
    let mut counts = SeedCounts::default();
    if reset {
        let demo_contacts = "SELECT id FROM contacts WHERE demo_key IS NOT NULL";
        sqlx::query::<DB>(&format!(
            "DELETE FROM delivery_attempts WHERE message_id IN \
             (SELECT id FROM messages WHERE contact_id IN ({demo_contacts}))"
        ))
        .execute(&mut *conn)
        .await?;
        let messages = format!("DELETE FROM messages WHERE contact_id IN ({demo_contacts})");
        counts.removed += sqlx::query::<DB>(&messages)
            .execute(&mut *conn)
            .await
            .map(|done| DB::rows_affected(&done))?;
        for table in ["invoices", "vehicles", "scheduled_messages", "contacts"] {
            let rows = format!("DELETE FROM {table} WHERE demo_key IS NOT NULL");
            counts.removed += sqlx::query::<DB>(&rows)
                .execute(&mut *conn)
                .await
                .map(|done| DB::rows_affected(&done))?;
        }
    }
    for c in &demo.contacts {
        counts.contacts += sqlx::query::<DB>(
            "INSERT INTO contacts (demo_key, name, phone, email, telegram_chat_id, channels) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (demo_key) DO NOTHING",
        )
        .bind(&c.key)
        .bind(&c.name)
        .bind(&c.phone)
        .bind(&c.email)
        .bind(&c.telegram_chat_id)
        .bind(&c.channels)
        .execute(&mut *conn)
        .await
        .map(|done| DB::rows_affected(&done))?;
    }
    // Each demo row names its contact by key: `$2` is that key.
    let contact = "(SELECT id FROM contacts WHERE demo_key = $2)";
    for i in &demo.invoices {
        counts.invoices += sqlx::query::<DB>(&format!(
            "INSERT INTO invoices (demo_key, contact_id, number, amount, due_date) \
             VALUES ($1, {contact}, $3, $4, $5) ON CONFLICT (demo_key) DO NOTHING"
        ))
        .bind(&i.key)
        .bind(&i.contact_key)
        .bind(&i.number)
        .bind(i.amount)
        .bind(i.due_date)
        .execute(&mut *conn)
        .await
        .map(|done| DB::rows_affected(&done))?;
    }
    for v in &demo.vehicles {
        counts.vehicles += sqlx::query::<DB>(&format!(
            "INSERT INTO vehicles (demo_key, contact_id, plate_no, last_visit_date, \
                 next_visit_date) \
             VALUES ($1, {contact}, $3, $4, $5) ON CONFLICT (demo_key) DO NOTHING"
        ))
        .bind(&v.key)
        .bind(&v.contact_key)
        .bind(&v.plate_no)
        .bind(v.last_visit_date)
        .bind(v.next_visit_date)
        .execute(&mut *conn)
        .await
        .map(|done| DB::rows_affected(&done))?;
    }
    for s in &demo.scheduled {
        counts.scheduled += sqlx::query::<DB>(&format!(
            "INSERT INTO scheduled_messages (demo_key, contact_id, channel, body, \
                 scheduled_at, recurrence, created_by) \
             VALUES ($1, {contact}, $3, $4, $5, $6, 'reminderctl seed') \
             ON CONFLICT (demo_key) DO NOTHING"
        ))
        .bind(&s.key)
        .bind(&s.contact_key)
        .bind(&s.channel)
        .bind(&s.body)
        .bind(DB::instant(s.scheduled_at))
        .bind(&s.recurrence)
        .execute(&mut *conn)
        .await
        .map(|done| DB::rows_affected(&done))?;
    }
    Ok(counts)
}

/// The test contact with this email (`test-dunning`): found, made, or (on a dry run) only
/// looked up. A contact found gets the phone and the channels the test sends on, and is opted
/// in again. Run it in a write transaction.
pub(crate) async fn test_contact<DB>(
    conn: &mut DB::Connection,
    name: &str,
    email: &str,
    phone: &str,
    dry_run: bool,
) -> Result<Option<TestContact>>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'r> (i64, String): FromRow<'r, DB::Row>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
{
    let found = sqlx::query_as::<DB, (i64, String)>(&format!(
        "SELECT id, name FROM contacts WHERE is_test AND lower(email) = lower($1) \
         ORDER BY id LIMIT 1{}",
        DB::FOR_UPDATE
    ))
    .bind(email)
    .fetch_optional(&mut *conn)
    .await?;
    if dry_run {
        return Ok(found.map(|(id, name)| TestContact { id, name, existed: true }));
    }
    let contact = if let Some((id, name)) = found {
        sqlx::query::<DB>(
            "UPDATE contacts SET phone = $2, channels = 'email,whatsapp', opted_out_at = NULL \
             WHERE id = $1 AND is_test",
        )
        .bind(id)
        .bind(phone)
        .execute(&mut *conn)
        .await?;
        TestContact { id, name, existed: true }
    } else {
        let id = sqlx::query_scalar::<DB, i64>(
            "INSERT INTO contacts (name, email, phone, channels, is_test) \
             VALUES ($1, $2, $3, 'email,whatsapp', true) RETURNING id",
        )
        .bind(name)
        .bind(email)
        .bind(phone)
        .fetch_one(&mut *conn)
        .await?;
        TestContact { id, name: name.to_string(), existed: false }
    };
    Ok(Some(contact))
}

/// An invoice for `test-dunning`; returns its id.
pub(crate) async fn create_test_invoice<DB>(
    conn: &mut DB::Connection,
    contact_id: i64,
    number: &str,
    amount: i64,
    due: NaiveDate,
) -> Result<i64>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> NaiveDate: Encode<'q, DB> + Type<DB>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
{
    Ok(sqlx::query_scalar::<DB, i64>(
        "INSERT INTO invoices (contact_id, number, amount, due_date, is_test) \
         VALUES ($1, $2, $3, $4, true) RETURNING id",
    )
    .bind(contact_id)
    .bind(number)
    .bind(amount)
    .bind(due)
    .fetch_one(&mut *conn)
    .await?)
}
