//! SQLite, the embedded default: WAL with a busy timeout, claims as one `UPDATE … RETURNING`
//! statement, multi-row writes as `BEGIN IMMEDIATE` transactions, and migrations behind a file
//! lock so that two processes starting on a new file do not race.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde_json::json;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Row};

use super::{
    Claimed, DemoData, DueScheduled, GenRow, Generated, NewMessage, Outcome, Preview, Result,
    ScheduledAdvance, SeedCounts, SlotGrant, StatusData, Store, StoreError, TestContact,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

pub struct SqliteStore {
    pool: SqlitePool,
    /// The database file, for the migration lock; `None` for an in-memory database.
    path: Option<PathBuf>,
}

/// Outbox timestamps: fixed-width UTC text, so that text order is time order.
fn ts(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn ts_opt(at: Option<DateTime<Utc>>) -> Option<String> {
    at.map(ts)
}

fn from_epoch(secs: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp(secs, 0)
        .ok_or_else(|| StoreError::Other(format!("timestamp {secs} is out of range")))
}

impl SqliteStore {
    pub async fn connect(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .log_statements(tracing::log::LevelFilter::Trace)
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(5));
        let filename = options.get_filename().to_path_buf();
        let path = (!filename.as_os_str().is_empty() && filename.as_os_str() != ":memory:")
            .then_some(filename);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await?;
        Ok(Self { pool, path })
    }

    /// The pool, for tests and benchmarks that prepare data directly.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// What delivery needs of messages this pass has just claimed.
    async fn claimed_context(&self, ids: &[i64], token: &str) -> Result<Vec<Claimed>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {CLAIM_CONTEXT} FROM messages cl {CLAIM_JOINS} \
             WHERE cl.id IN (SELECT value FROM json_each(?1)) AND cl.claimed_by = ?2 \
             ORDER BY cl.id"
        );
        Ok(sqlx::query_as::<_, Claimed>(&sql)
            .bind(serde_json::to_string(ids).unwrap_or_default())
            .bind(token)
            .fetch_all(&self.pool)
            .await?)
    }
}

/// A contact's first preferred channel, or WhatsApp when it names none.
const CHANNEL: &str = "COALESCE(NULLIF(lower(trim(CASE WHEN instr(c.channels, ',') > 0 \
     THEN substr(c.channels, 1, instr(c.channels, ',') - 1) ELSE c.channels END)), ''), 'whatsapp')";

const STATUS: &str = "CASE WHEN s.contact_found IS NULL THEN 'failed' \
     WHEN s.channel NOT IN ('whatsapp', 'telegram', 'email') THEN 'failed' \
     WHEN s.opted_out THEN 'skipped' ELSE 'pending' END";
const REASON: &str = "CASE WHEN s.contact_found IS NULL THEN \
       'contact ' || COALESCE(CAST(s.contact_id AS TEXT), '(none)') || ' not found' \
     WHEN s.channel NOT IN ('whatsapp', 'telegram', 'email') THEN \
       'unknown channel ''' || s.channel || '''' \
     WHEN s.opted_out THEN 'contact opted out' END";

/// A rule's candidates (`source`) as outbox rows, with their status decided in SQL.
fn rows_sql(kind: &str, source: &str) -> String {
    format!(
        "SELECT '{kind}' AS kind, s.subject_id, s.stage, s.event_date, s.dedup_key, s.contact_id, \
                s.channel, s.body, s.media_url, {STATUS} AS status, {REASON} AS last_error \
         FROM ({source}) s"
    )
}

/// Counts a rule's candidates, then inserts them (or, dry, selects those not queued yet). `?1`
/// is now; the source's own parameters follow. Occurrences already queued are left to
/// `ON CONFLICT`: the partial unique index on `dedup_key` holds one per occurrence. The new
/// rows stream past: all are counted, the first `keep` kept.
async fn generate(
    conn: &mut sqlx::SqliteConnection,
    kind: &str,
    source: &str,
    binds: &[serde_json::Value],
    now: DateTime<Utc>,
    dry_run: bool,
    keep: usize,
) -> Result<Generated> {
    use futures::TryStreamExt as _;

    fn bind_all<'q>(
        mut q: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
        now: &str,
        binds: &'q [serde_json::Value],
    ) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
        q = q.bind(now.to_string());
        for b in binds {
            q = match b {
                serde_json::Value::String(s) => q.bind(s.as_str()),
                serde_json::Value::Number(n) => q.bind(n.as_i64()),
                other => q.bind(other.to_string()),
            };
        }
        q
    }
    let now_text = ts(now);
    let count_sql = format!("SELECT count(*) AS found FROM ({source}) s WHERE ?1 IS NOT NULL");
    let found: i64 = bind_all(sqlx::query(&count_sql), &now_text, binds)
        .fetch_one(&mut *conn)
        .await?
        .try_get("found")?;
    let rows = rows_sql(kind, source);
    let sql = if dry_run {
        format!(
            "SELECT NULL AS id, n.kind, n.subject_id, n.stage, n.channel, n.status, \
                 n.last_error AS error FROM ({rows}) n \
             WHERE ?1 IS NOT NULL \
               AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.dedup_key = n.dedup_key)"
        )
    } else {
        format!(
            "INSERT INTO messages (kind, subject_id, stage, event_date, dedup_key, contact_id, \
                 channel, body, media_url, status, last_error, next_attempt_at, created_at) \
             SELECT n.kind, n.subject_id, n.stage, n.event_date, n.dedup_key, n.contact_id, \
                 n.channel, n.body, n.media_url, n.status, n.last_error, ?1, ?1 \
             FROM ({rows}) n WHERE true \
             ON CONFLICT DO NOTHING \
             RETURNING id, kind, subject_id, stage, channel, status, last_error AS error"
        )
    };
    let mut out = Generated { found: found.max(0) as u64, ..Generated::default() };
    let mut stream = bind_all(sqlx::query(&sql), &now_text, binds).fetch(&mut *conn);
    while let Some(r) = stream.try_next().await? {
        let status: String = r.try_get("status")?;
        out.queued += 1;
        match status.as_str() {
            "failed" => out.failed += 1,
            "skipped" => out.skipped += 1,
            _ => {}
        }
        if out.rows.len() < keep {
            out.rows.push(GenRow {
                id: r.try_get("id")?,
                kind: r.try_get("kind")?,
                subject_id: r.try_get("subject_id")?,
                stage: r.try_get("stage")?,
                channel: r.try_get("channel")?,
                status,
                error: r.try_get("error")?,
            });
        }
    }
    Ok(out)
}

const CLAIM_CONTEXT: &str = "cl.id, cl.kind, cl.subject_id, cl.stage, cl.event_date, cl.channel, \
    cl.subject, cl.body, cl.media_url, cl.attempts, cl.contact_id, c.id AS contact_found, c.name, \
    c.phone, c.email, c.telegram_chat_id, (c.opted_out_at IS NOT NULL) AS opted_out, \
    i.number AS invoice_number, i.amount AS invoice_amount, date(i.due_date) AS invoice_due, \
    i.status AS invoice_status, v.plate_no, c.channels, cl.recipient";

const CLAIM_JOINS: &str = "LEFT JOIN contacts c ON c.id = cl.contact_id \
    LEFT JOIN invoices i ON cl.kind = 'dunning' AND i.id = cl.subject_id \
    LEFT JOIN vehicles v ON cl.kind = 'maintenance' AND v.id = cl.subject_id";

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn migrate(&self) -> Result<()> {
        let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        let applied = |pool: SqlitePool| async move {
            sqlx::query_scalar::<_, Option<i64>>(
                "SELECT max(version) FROM _sqlx_migrations WHERE success",
            )
            .fetch_one(&pool)
            .await
            .unwrap_or(None)
        };
        if applied(self.pool.clone()).await == Some(latest) {
            return Ok(());
        }
        // sqlx takes no lock on SQLite: serialize first-time setup across processes with a
        // lock file beside the database.
        let _lock = match &self.path {
            Some(path) => {
                let mut lock_path = path.clone().into_os_string();
                lock_path.push(".migrate-lock");
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&lock_path)
                    .map_err(|e| StoreError::Other(format!("cannot open migration lock: {e}")))?;
                let file = tokio::task::spawn_blocking(move || file.lock().map(|()| file))
                    .await
                    .map_err(|e| StoreError::Other(format!("migration lock: {e}")))?
                    .map_err(|e| StoreError::Other(format!("cannot take migration lock: {e}")))?;
                Some(file)
            }
            None => None,
        };
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    async fn generate_dunning(
        &self,
        stage: &str,
        due: (NaiveDate, NaiveDate),
        now: DateTime<Utc>,
        dry_run: bool,
        keep: usize,
    ) -> Result<Generated> {
        let source = format!(
            "SELECT i.id AS subject_id, ?2 AS stage, date(i.due_date) AS event_date, \
                 'dunning:' || i.id || ':' || date(i.due_date) || ':' || ?2 AS dedup_key, \
                 i.contact_id, c.id AS contact_found, (c.opted_out_at IS NOT NULL) AS opted_out, \
                 {CHANNEL} AS channel, NULL AS body, NULL AS media_url \
             FROM invoices i LEFT JOIN contacts c ON c.id = i.contact_id \
             WHERE i.status = 'unpaid' AND date(i.due_date) BETWEEN ?3 AND ?4"
        );
        let binds = [json!(stage), json!(due.0.to_string()), json!(due.1.to_string())];
        let mut conn = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let out = generate(&mut conn, "dunning", &source, &binds, now, dry_run, keep).await?;
        conn.commit().await?;
        Ok(out)
    }

    async fn generate_maintenance(
        &self,
        visit: (NaiveDate, NaiveDate),
        now: DateTime<Utc>,
        dry_run: bool,
        keep: usize,
    ) -> Result<Generated> {
        // date(d, '+4 months') overflows into the next month (Oct 31 → Mar 3); clamp to the
        // month's last day as PostgreSQL does (Oct 31 → Feb 28).
        let source = format!(
            "SELECT v.id AS subject_id, 'visit' AS stage, v.visit AS event_date, \
                 'maintenance:' || v.id || ':' || v.visit AS dedup_key, \
                 v.contact_id, c.id AS contact_found, (c.opted_out_at IS NOT NULL) AS opted_out, \
                 {CHANNEL} AS channel, NULL AS body, NULL AS media_url \
             FROM (SELECT id, contact_id, COALESCE(date(next_visit_date), \
                       CASE WHEN strftime('%d', date(last_visit_date, '+4 months')) \
                                 = strftime('%d', date(last_visit_date)) \
                            THEN date(last_visit_date, '+4 months') \
                            ELSE date(last_visit_date, 'start of month', '+5 months', '-1 day') \
                       END) AS visit FROM vehicles) v \
             LEFT JOIN contacts c ON c.id = v.contact_id \
             WHERE v.visit BETWEEN ?2 AND ?3"
        );
        let binds = [json!(visit.0.to_string()), json!(visit.1.to_string())];
        let mut conn = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let out = generate(&mut conn, "maintenance", &source, &binds, now, dry_run, keep).await?;
        conn.commit().await?;
        Ok(out)
    }

    async fn due_scheduled(
        &self,
        now: DateTime<Utc>,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<DueScheduled>> {
        let rows = sqlx::query(
            "SELECT id, unixepoch(scheduled_at) AS scheduled_at, \
                 unixepoch(COALESCE(next_run_at, scheduled_at)) AS run_at, recurrence \
             FROM scheduled_messages \
             WHERE status = 'active' AND unixepoch(COALESCE(next_run_at, scheduled_at)) <= ?1 \
               AND id > ?2 \
             ORDER BY id LIMIT ?3",
        )
        .bind(now.timestamp())
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DueScheduled {
                    id: r.try_get("id")?,
                    scheduled_at: from_epoch(r.try_get("scheduled_at")?)?,
                    run_at: from_epoch(r.try_get("run_at")?)?,
                    recurrence: r.try_get("recurrence")?,
                })
            })
            .collect()
    }

    async fn queue_scheduled(
        &self,
        advances: &[ScheduledAdvance],
        now: DateTime<Utc>,
        dry_run: bool,
        keep: usize,
    ) -> Result<Generated> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut won: Vec<&ScheduledAdvance> = advances.iter().collect();
        if !dry_run {
            let batch: Vec<_> = advances
                .iter()
                .map(|a| json!({"id": a.id, "run_at": a.run_at.timestamp(), "next": ts_opt(a.next_run_at)}))
                .collect();
            // Compare-and-set on the run time: of two passes, only one moves the series on.
            let ids: Vec<i64> = sqlx::query_scalar(
                "UPDATE scheduled_messages \
                 SET next_run_at = d.next, \
                     status = CASE WHEN d.next IS NULL THEN 'done' ELSE 'active' END \
                 FROM (SELECT value ->> 'id' AS id, value ->> 'run_at' AS run_at, \
                           value ->> 'next' AS next FROM json_each(?1)) d \
                 WHERE scheduled_messages.id = d.id AND scheduled_messages.status = 'active' \
                   AND unixepoch(COALESCE(scheduled_messages.next_run_at, \
                       scheduled_messages.scheduled_at)) = d.run_at \
                 RETURNING scheduled_messages.id",
            )
            .bind(serde_json::Value::Array(batch).to_string())
            .fetch_all(&mut *tx)
            .await?;
            won.retain(|a| ids.contains(&a.id));
        }
        let batch: Vec<_> =
            won.iter().map(|a| json!({"id": a.id, "key": a.dedup_key, "stage": a.stage})).collect();
        let source = "SELECT s.id AS subject_id, d.stage, NULL AS event_date, d.key AS dedup_key, \
                 s.contact_id, c.id AS contact_found, (c.opted_out_at IS NOT NULL) AS opted_out, \
                 COALESCE(NULLIF(lower(trim(s.channel)), ''), 'whatsapp') AS channel, \
                 COALESCE(NULLIF(s.body, ''), s.caption, '') AS body, s.media_url \
             FROM (SELECT value ->> 'id' AS id, value ->> 'key' AS key, value ->> 'stage' AS stage \
                   FROM json_each(?2)) d \
             JOIN scheduled_messages s ON s.id = d.id \
             LEFT JOIN contacts c ON c.id = s.contact_id";
        let binds = [json!(serde_json::Value::Array(batch).to_string())];
        let mut out = generate(&mut tx, "scheduled", source, &binds, now, dry_run, keep).await?;
        tx.commit().await?;
        out.found = advances.len() as u64;
        Ok(out)
    }

    async fn cancel_settled(&self, now: DateTime<Utc>, dry_run: bool) -> Result<Vec<GenRow>> {
        let _ = now;
        let sql = if dry_run {
            "SELECT m.id, m.kind, m.subject_id, m.stage, m.channel, 'cancelled' AS status, \
                 'invoice is ' || i.status AS error \
             FROM messages m JOIN invoices i ON i.id = m.subject_id \
             WHERE m.kind = 'dunning' AND m.status = 'pending' AND i.status <> 'unpaid'"
        } else {
            "UPDATE messages SET status = 'cancelled', last_error = 'invoice is ' || i.status \
             FROM invoices i \
             WHERE messages.kind = 'dunning' AND messages.status = 'pending' \
               AND i.id = messages.subject_id AND i.status <> 'unpaid' \
             RETURNING messages.id, messages.kind, messages.subject_id, messages.stage, \
                 messages.channel, messages.status, messages.last_error AS error"
        };
        Ok(sqlx::query_as::<_, GenRow>(sql).fetch_all(&self.pool).await?)
    }

    async fn reserve_slots(
        &self,
        channel: &str,
        count: u32,
        interval_ms: i64,
        now_ms: i64,
        horizon_ms: i64,
    ) -> Result<Option<SlotGrant>> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("INSERT INTO channel_state (channel) VALUES (?1) ON CONFLICT DO NOTHING")
            .bind(channel)
            .execute(&mut *tx)
            .await?;
        let next: i64 =
            sqlx::query_scalar("SELECT next_slot_ms FROM channel_state WHERE channel = ?1")
                .bind(channel)
                .fetch_one(&mut *tx)
                .await?;
        let Some(grant) = super::slots(next, count, interval_ms, now_ms, horizon_ms) else {
            tx.commit().await?;
            return Ok(None);
        };
        sqlx::query("UPDATE channel_state SET next_slot_ms = ?2 WHERE channel = ?1")
            .bind(channel)
            .bind(grant.end_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(grant))
    }

    async fn return_slots(
        &self,
        channel: &str,
        grant: SlotGrant,
        unused: u32,
        interval_ms: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE channel_state SET next_slot_ms = next_slot_ms - ?3 \
             WHERE channel = ?1 AND next_slot_ms = ?2",
        )
        .bind(channel)
        .bind(grant.end_ms)
        .bind(i64::from(unused) * interval_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn claim(
        &self,
        channel: &str,
        limit: i64,
        token: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Claimed>> {
        // One statement: SQLite runs it under its write lock, so two passes never take the
        // same row, and there is no read-then-write upgrade to deadlock on.
        let ids: Vec<i64> = sqlx::query_scalar(
            "UPDATE messages SET status = 'sending', attempts = attempts + 1, claimed_by = ?4, \
                 claimed_until = ?5, next_attempt_at = ?5 \
             WHERE id IN (SELECT id FROM messages \
                 WHERE channel = ?1 AND status IN ('pending', 'sending') AND next_attempt_at <= ?2 \
                 ORDER BY next_attempt_at, id LIMIT ?3) \
             RETURNING id",
        )
        .bind(channel)
        .bind(ts(now))
        .bind(limit)
        .bind(token)
        .bind(ts(lease_until))
        .fetch_all(&self.pool)
        .await?;
        self.claimed_context(&ids, token).await
    }

    async fn record(&self, token: &str, outcomes: &[Outcome]) -> Result<Vec<i64>> {
        if outcomes.is_empty() {
            return Ok(Vec::new());
        }
        let batch: Vec<_> = outcomes
            .iter()
            .map(|o| {
                json!({
                    "id": o.id, "status": o.status, "refund": i32::from(o.refund),
                    "next_at": ts_opt(o.next_attempt_at), "error": o.error,
                    "provider": o.provider, "pid": o.provider_message_id,
                    "recipient": o.recipient, "subject": o.subject, "body": o.body,
                    "sent_at": ts_opt(o.sent_at),
                })
            })
            .collect();
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let updated: Vec<i64> = sqlx::query_scalar(
            "UPDATE messages SET status = v.status, \
                 attempts = CASE WHEN v.refund = 1 THEN max(messages.attempts - 1, 0) \
                     ELSE messages.attempts END, \
                 next_attempt_at = COALESCE(v.next_at, messages.next_attempt_at), \
                 last_error = v.error, \
                 provider = COALESCE(v.provider, messages.provider), \
                 provider_message_id = COALESCE(v.pid, messages.provider_message_id), \
                 recipient = COALESCE(v.recipient, messages.recipient), \
                 subject = COALESCE(v.subject, messages.subject), \
                 body = COALESCE(v.body, messages.body), \
                 sent_at = COALESCE(v.sent_at, messages.sent_at), \
                 claimed_by = NULL, claimed_until = NULL \
             FROM (SELECT value ->> 'id' AS id, value ->> 'status' AS status, \
                       value ->> 'refund' AS refund, value ->> 'next_at' AS next_at, \
                       value ->> 'error' AS error, value ->> 'provider' AS provider, \
                       value ->> 'pid' AS pid, value ->> 'recipient' AS recipient, \
                       value ->> 'subject' AS subject, value ->> 'body' AS body, \
                       value ->> 'sent_at' AS sent_at FROM json_each(?2)) v \
             WHERE messages.id = v.id AND messages.claimed_by = ?1 \
               AND messages.status = 'sending' \
             RETURNING messages.id",
        )
        .bind(token)
        .bind(serde_json::Value::Array(batch).to_string())
        .fetch_all(&mut *tx)
        .await?;
        let lost: Vec<i64> =
            outcomes.iter().map(|o| o.id).filter(|id| !updated.contains(id)).collect();
        let fallbacks: Vec<_> = outcomes
            .iter()
            .filter(|o| updated.contains(&o.id))
            .filter_map(|o| {
                let channel = o.fallback.as_ref()?;
                Some(json!({"id": o.id, "channel": channel, "at": ts(o.at)}))
            })
            .collect();
        if !fallbacks.is_empty() {
            // The same reminder on the contact's next channel; the row just written keeps its
            // rendered body, so dunning and maintenance texts are rendered afresh.
            sqlx::query(
                "INSERT INTO messages (kind, subject_id, stage, event_date, dedup_key, origin, \
                     contact_id, channel, body, media_url, status, next_attempt_at, created_at) \
                 SELECT m.kind, m.subject_id, m.stage, m.event_date, m.dedup_key, 'fallback', \
                     m.contact_id, f.value ->> 'channel', \
                     CASE WHEN m.kind IN ('dunning', 'maintenance') THEN NULL ELSE m.body END, \
                     m.media_url, 'pending', f.value ->> 'at', f.value ->> 'at' \
                 FROM json_each(?1) f JOIN messages m ON m.id = f.value ->> 'id' \
                 WHERE true ON CONFLICT DO NOTHING",
            )
            .bind(serde_json::Value::Array(fallbacks).to_string())
            .execute(&mut *tx)
            .await?;
        }
        let history: Vec<_> = outcomes
            .iter()
            .filter_map(|o| {
                let label = o.history?;
                let label =
                    if lost.contains(&o.id) { format!("late {label}") } else { label.to_string() };
                Some(json!({
                    "id": o.id, "attempt": o.attempt, "channel": o.channel,
                    "provider": o.provider, "outcome": label, "error": o.error,
                    "pid": o.provider_message_id, "at": ts(o.at),
                }))
            })
            .collect();
        if !history.is_empty() {
            sqlx::query(
                "INSERT INTO delivery_attempts (message_id, attempt, channel, provider, outcome, \
                     error, provider_message_id, claimed_by, at) \
                 SELECT value ->> 'id', value ->> 'attempt', value ->> 'channel', \
                     value ->> 'provider', value ->> 'outcome', value ->> 'error', \
                     value ->> 'pid', ?1, value ->> 'at' FROM json_each(?2)",
            )
            .bind(token)
            .bind(serde_json::Value::Array(history).to_string())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(lost)
    }

    async fn set_channel_down(
        &self,
        channel: &str,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO channel_state (channel, down_reason, down_since) VALUES (?1, ?2, ?3) \
             ON CONFLICT (channel) DO UPDATE SET down_reason = excluded.down_reason, \
                 down_since = CASE WHEN excluded.down_reason IS NULL THEN NULL \
                     ELSE COALESCE(channel_state.down_since, excluded.down_since) END",
        )
        .bind(channel)
        .bind(reason)
        .bind(reason.map(|_| ts(now)))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn preview_due(
        &self,
        channel: &str,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Preview>> {
        Ok(sqlx::query_as::<_, Preview>(
            "SELECT id, kind, stage, channel, contact_id FROM messages \
             WHERE channel = ?1 AND status IN ('pending', 'sending') AND next_attempt_at <= ?2 \
             ORDER BY next_attempt_at, id LIMIT ?3",
        )
        .bind(channel)
        .bind(ts(now))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn status(&self, now: DateTime<Utc>, failures: i64) -> Result<StatusData> {
        let counts = sqlx::query_as(
            "SELECT kind, status, channel, count(*) AS count FROM messages \
             GROUP BY kind, status, channel ORDER BY kind, status, channel",
        )
        .fetch_all(&self.pool)
        .await?;
        let failures = sqlx::query_as(
            "SELECT id, kind, stage, channel, recipient, status, last_error AS error, \
                 substr(COALESCE(sent_at, next_attempt_at), 1, 19) || 'Z' AS at \
             FROM messages WHERE status = 'failed' \
                 OR (status IN ('pending', 'skipped') AND last_error IS NOT NULL) \
             ORDER BY id DESC LIMIT ?1",
        )
        .bind(failures)
        .fetch_all(&self.pool)
        .await?;
        let down = sqlx::query_as(
            "SELECT channel, down_reason AS reason, substr(down_since, 1, 19) || 'Z' AS since \
             FROM channel_state WHERE down_reason IS NOT NULL ORDER BY channel",
        )
        .fetch_all(&self.pool)
        .await?;
        let due = sqlx::query_as::<_, (String, i64)>(
            "SELECT channel, count(*) FROM messages \
             WHERE status IN ('pending', 'sending') AND next_attempt_at <= ?1 \
             GROUP BY channel ORDER BY channel",
        )
        .bind(ts(now))
        .fetch_all(&self.pool)
        .await?;
        Ok(StatusData { counts, failures, down, due })
    }

    async fn claim_ids(
        &self,
        ids: &[i64],
        token: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Claimed>> {
        let claimed: Vec<i64> = sqlx::query_scalar(
            "UPDATE messages SET status = 'sending', attempts = attempts + 1, claimed_by = ?2, \
                 claimed_until = ?4, next_attempt_at = ?4 \
             WHERE id IN (SELECT value FROM json_each(?1)) AND (status = 'pending' \
                 OR (status = 'sending' AND next_attempt_at <= ?3)) \
             RETURNING id",
        )
        .bind(serde_json::to_string(ids).unwrap_or_default())
        .bind(token)
        .bind(ts(now))
        .bind(ts(lease_until))
        .fetch_all(&self.pool)
        .await?;
        self.claimed_context(&claimed, token).await
    }

    async fn insert_messages(&self, rows: &[NewMessage], now: DateTime<Utc>) -> Result<Vec<i64>> {
        let mut ids = Vec::new();
        for r in rows {
            let id: Option<i64> = sqlx::query_scalar(
                "INSERT INTO messages (kind, subject_id, stage, event_date, dedup_key, origin, \
                     contact_id, channel, recipient, body, status, next_attempt_at, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, 'manual', ?6, ?7, ?8, ?9, 'pending', ?10, ?10) \
                 ON CONFLICT (dedup_key, channel) DO NOTHING RETURNING id",
            )
            .bind(r.kind)
            .bind(r.subject_id)
            .bind(&r.stage)
            .bind(r.event_date.map(|d| d.to_string()))
            .bind(&r.dedup_key)
            .bind(r.contact_id)
            .bind(&r.channel)
            .bind(&r.recipient)
            .bind(&r.body)
            .bind(ts(now))
            .fetch_optional(&self.pool)
            .await?;
            ids.extend(id);
        }
        Ok(ids)
    }

    async fn test_contact(
        &self,
        name: &str,
        email: &str,
        phone: &str,
        dry_run: bool,
    ) -> Result<Option<TestContact>> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let found: Option<(i64, String)> = sqlx::query_as(
            "SELECT id, name FROM contacts WHERE lower(email) = lower(?1) ORDER BY id LIMIT 1",
        )
        .bind(email)
        .fetch_optional(&mut *tx)
        .await?;
        if dry_run {
            return Ok(found.map(|(id, name)| TestContact { id, name, existed: true }));
        }
        let contact = if let Some((id, name)) = found {
            sqlx::query(
                "UPDATE contacts SET phone = ?2, channels = 'email,whatsapp', opted_out_at = NULL \
                 WHERE id = ?1",
            )
            .bind(id)
            .bind(phone)
            .execute(&mut *tx)
            .await?;
            TestContact { id, name, existed: true }
        } else {
            let id = sqlx::query_scalar(
                "INSERT INTO contacts (name, email, phone, channels) \
                 VALUES (?1, ?2, ?3, 'email,whatsapp') RETURNING id",
            )
            .bind(name)
            .bind(email)
            .bind(phone)
            .fetch_one(&mut *tx)
            .await?;
            TestContact { id, name: name.to_string(), existed: false }
        };
        tx.commit().await?;
        Ok(Some(contact))
    }

    async fn create_invoice(
        &self,
        contact_id: i64,
        number: &str,
        amount: i64,
        due: NaiveDate,
    ) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "INSERT INTO invoices (contact_id, number, amount, due_date) \
             VALUES (?1, ?2, ?3, ?4) RETURNING id",
        )
        .bind(contact_id)
        .bind(number)
        .bind(amount)
        .bind(due.to_string())
        .fetch_one(&self.pool)
        .await?)
    }

    async fn seed(&self, demo: &DemoData, reset: bool) -> Result<SeedCounts> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut counts = SeedCounts::default();
        if reset {
            let demo_contacts = "SELECT id FROM contacts WHERE demo_key IS NOT NULL";
            sqlx::query(&format!(
                "DELETE FROM delivery_attempts WHERE message_id IN \
                 (SELECT id FROM messages WHERE contact_id IN ({demo_contacts}))"
            ))
            .execute(&mut *tx)
            .await?;
            counts.removed +=
                sqlx::query(&format!("DELETE FROM messages WHERE contact_id IN ({demo_contacts})"))
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            for table in ["invoices", "vehicles", "scheduled_messages", "contacts"] {
                counts.removed +=
                    sqlx::query(&format!("DELETE FROM {table} WHERE demo_key IS NOT NULL"))
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
            }
        }
        for c in &demo.contacts {
            counts.contacts += sqlx::query(
                "INSERT INTO contacts (demo_key, name, phone, email, telegram_chat_id, channels) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (demo_key) DO NOTHING",
            )
            .bind(&c.key)
            .bind(&c.name)
            .bind(&c.phone)
            .bind(&c.email)
            .bind(&c.telegram_chat_id)
            .bind(&c.channels)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        let contact = "(SELECT id FROM contacts WHERE demo_key = ?2)";
        for i in &demo.invoices {
            counts.invoices += sqlx::query(&format!(
                "INSERT INTO invoices (demo_key, contact_id, number, amount, due_date) \
                 VALUES (?1, {contact}, ?3, ?4, ?5) ON CONFLICT (demo_key) DO NOTHING"
            ))
            .bind(&i.key)
            .bind(&i.contact_key)
            .bind(&i.number)
            .bind(i.amount)
            .bind(i.due_date.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        for v in &demo.vehicles {
            counts.vehicles += sqlx::query(&format!(
                "INSERT INTO vehicles (demo_key, contact_id, plate_no, last_visit_date, \
                     next_visit_date) \
                 VALUES (?1, {contact}, ?3, ?4, ?5) ON CONFLICT (demo_key) DO NOTHING"
            ))
            .bind(&v.key)
            .bind(&v.contact_key)
            .bind(&v.plate_no)
            .bind(v.last_visit_date.to_string())
            .bind(v.next_visit_date.map(|d| d.to_string()))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        for s in &demo.scheduled {
            counts.scheduled += sqlx::query(&format!(
                "INSERT INTO scheduled_messages (demo_key, contact_id, channel, body, \
                     scheduled_at, recurrence, created_by) \
                 VALUES (?1, {contact}, ?3, ?4, ?5, ?6, 'reminderctl seed') \
                 ON CONFLICT (demo_key) DO NOTHING"
            ))
            .bind(&s.key)
            .bind(&s.contact_key)
            .bind(&s.channel)
            .bind(&s.body)
            .bind(ts(s.scheduled_at))
            .bind(&s.recurrence)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(counts)
    }
}
