//! PostgreSQL: claims with `FOR UPDATE SKIP LOCKED` inside a materialized CTE, batch writes with
//! `UNNEST`, and migrations under sqlx's advisory lock so that concurrent starts are safe.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};
use sqlx::{ConnectOptions, Connection, PgConnection, Row};
use tokio::sync::Mutex;

use super::{
    Claimed, DemoData, DueScheduled, GenRow, Generated, NewMessage, Outcome, Preview, Result,
    ScheduledAdvance, SeedCounts, SlotGrant, StatusData, Store, TestContact,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

pub struct PgStore {
    /// One connection for the pass's sequential work (migrations, generation, claims,
    /// reports): every PostgreSQL connection costs a backend start, and the every-minute idle
    /// tick should need only this one.
    primary: Mutex<PgConnection>,
    /// Connections for work that runs beside it (writing delivery results, rate slots), opened
    /// only when used.
    pool: PgPool,
}

impl PgStore {
    pub async fn connect(url: &str) -> Result<Self> {
        let mut options = PgConnectOptions::from_str(url)?;
        // sqlx defaults to `sslmode=prefer`, a TLS handshake per connection even on loopback,
        // where it protects nothing and costs the every-minute tick most of its time. A URL
        // that names an sslmode keeps it.
        if !url.contains("sslmode=") && is_local(options.get_host()) {
            options = options.ssl_mode(PgSslMode::Disable);
        }
        let options = options
            .application_name("reminderctl")
            .log_statements(tracing::log::LevelFilter::Trace)
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(5));
        let primary = options.connect().await?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(options);
        Ok(Self { primary: Mutex::new(primary), pool })
    }

    /// The pool, for tests and benchmarks that prepare data directly.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// A Unix socket directory or a loopback address.
fn is_local(host: &str) -> bool {
    host.starts_with('/')
        || host == "localhost"
        || host == "::1"
        || host == "[::1]"
        || host.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

/// A contact's first preferred channel, or WhatsApp when it names none.
const CHANNEL: &str =
    "COALESCE(NULLIF(lower(trim(split_part(c.channels, ',', 1))), ''), 'whatsapp')";

/// Status and reason of a new outbox row, decided in SQL so that generation stays set-based.
const STATUS: &str = "CASE WHEN s.contact_found IS NULL THEN 'failed' \
     WHEN s.channel NOT IN ('whatsapp', 'telegram', 'email') THEN 'failed' \
     WHEN s.opted_out THEN 'skipped' ELSE 'pending' END";
const REASON: &str = "CASE WHEN s.contact_found IS NULL THEN \
       'contact ' || COALESCE(CAST(s.contact_id AS TEXT), '(none)') || ' not found' \
     WHEN s.channel NOT IN ('whatsapp', 'telegram', 'email') THEN \
       'unknown channel ''' || s.channel || '''' \
     WHEN s.opted_out THEN 'contact opted out' END";

/// Wraps a rule's candidate rows (`source`, parameters from `$2`) into one statement that
/// inserts them (or, dry, selects those not queued yet), counts every candidate and what was
/// created, and returns the first `keep` new rows. `$1` is now. Occurrences already queued are
/// left to `ON CONFLICT`: the partial unique index on `dedup_key` holds one per occurrence.
fn generation_sql(kind: &str, source: &str, dry_run: bool, keep: usize) -> String {
    let rows = format!(
        "SELECT '{kind}' AS kind, s.subject_id, s.stage, s.event_date, s.dedup_key, s.contact_id, \
                s.channel, s.body, s.media_url, {STATUS} AS status, {REASON} AS last_error \
         FROM src s"
    );
    let out = if dry_run {
        format!(
            "out AS (SELECT NULL::bigint AS id, n.kind, n.subject_id, n.stage, n.channel, \
                 n.status, n.last_error FROM ({rows}) n \
             WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.dedup_key = n.dedup_key))"
        )
    } else {
        format!(
            "out AS (INSERT INTO messages (kind, subject_id, stage, event_date, dedup_key, \
                 contact_id, channel, body, media_url, status, last_error, next_attempt_at, created_at) \
             SELECT n.kind, n.subject_id, n.stage, n.event_date, n.dedup_key, n.contact_id, \
                 n.channel, n.body, n.media_url, n.status, n.last_error, $1, $1 FROM ({rows}) n \
             ON CONFLICT DO NOTHING \
             RETURNING id, kind, subject_id, stage, channel, status, last_error)"
        )
    };
    let limit = i64::try_from(keep).map_or_else(|_| "ALL".to_string(), |k| k.to_string());
    format!(
        "WITH src AS MATERIALIZED ({source}), {out}, \
             kept AS (SELECT * FROM out LIMIT {limit}) \
         SELECT f.found, a.queued, a.failed, a.skipped, k.id, k.kind, k.subject_id, k.stage, \
                k.channel, k.status, k.last_error AS error \
         FROM (SELECT count(*) AS found FROM src) f \
         CROSS JOIN (SELECT count(*) AS queued, \
                         count(*) FILTER (WHERE status = 'failed') AS failed, \
                         count(*) FILTER (WHERE status = 'skipped') AS skipped FROM out) a \
         LEFT JOIN kept k ON true"
    )
}

fn generated(rows: Vec<sqlx::postgres::PgRow>) -> Result<Generated> {
    let mut out = Generated::default();
    let count = |row: &sqlx::postgres::PgRow, name: &str| -> Result<u64> {
        Ok(row.try_get::<i64, _>(name)?.max(0) as u64)
    };
    for row in rows {
        out.found = count(&row, "found")?;
        out.queued = count(&row, "queued")?;
        out.failed = count(&row, "failed")?;
        out.skipped = count(&row, "skipped")?;
        let Some(kind) = row.try_get::<Option<String>, _>("kind")? else { continue };
        out.rows.push(GenRow {
            id: row.try_get("id")?,
            kind,
            subject_id: row.try_get("subject_id")?,
            stage: row.try_get("stage")?,
            channel: row.try_get::<Option<String>, _>("channel")?.unwrap_or_default(),
            status: row.try_get::<Option<String>, _>("status")?.unwrap_or_default(),
            error: row.try_get("error")?,
        });
    }
    Ok(out)
}

const CLAIM_CONTEXT: &str = "cl.id, cl.kind, cl.subject_id, cl.stage, \
    to_char(cl.event_date, 'YYYY-MM-DD') AS event_date, cl.channel, cl.subject, cl.body, \
    cl.media_url, cl.attempts, cl.contact_id, c.id AS contact_found, c.name, c.phone, c.email, \
    c.telegram_chat_id, (c.opted_out_at IS NOT NULL) AS opted_out, i.number AS invoice_number, \
    i.amount AS invoice_amount, to_char(i.due_date, 'YYYY-MM-DD') AS invoice_due, \
    i.status AS invoice_status, v.plate_no, c.channels, cl.recipient";

const CLAIM_JOINS: &str = "LEFT JOIN contacts c ON c.id = cl.contact_id \
    LEFT JOIN invoices i ON cl.kind = 'dunning' AND i.id = cl.subject_id \
    LEFT JOIN vehicles v ON cl.kind = 'maintenance' AND v.id = cl.subject_id";

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn migrate(&self) -> Result<()> {
        // Fast path for the every-minute tick: nothing to do when the newest migration is in.
        let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        let applied: Option<i64> = sqlx::query_scalar(
            "SELECT max(version) FROM _sqlx_migrations WHERE success \
             AND to_regclass('_sqlx_migrations') IS NOT NULL",
        )
        .fetch_one(&mut *self.primary.lock().await)
        .await
        .unwrap_or(None);
        if applied == Some(latest) {
            return Ok(());
        }
        // First start only (the check above is the fast path): the pool's advisory lock makes
        // concurrent first starts safe.
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
            "SELECT i.id AS subject_id, $2::text AS stage, i.due_date AS event_date, \
                 'dunning:' || i.id || ':' || to_char(i.due_date, 'YYYY-MM-DD') || ':' || $2::text \
                     AS dedup_key, \
                 i.contact_id, c.id AS contact_found, (c.opted_out_at IS NOT NULL) AS opted_out, \
                 {CHANNEL} AS channel, NULL::text AS body, NULL::text AS media_url \
             FROM invoices i LEFT JOIN contacts c ON c.id = i.contact_id \
             WHERE i.status = 'unpaid' AND i.due_date BETWEEN $3 AND $4"
        );
        let rows = sqlx::query(&generation_sql("dunning", &source, dry_run, keep))
            .bind(now)
            .bind(stage)
            .bind(due.0)
            .bind(due.1)
            .fetch_all(&mut *self.primary.lock().await)
            .await?;
        generated(rows)
    }

    async fn generate_maintenance(
        &self,
        visit: (NaiveDate, NaiveDate),
        now: DateTime<Utc>,
        dry_run: bool,
        keep: usize,
    ) -> Result<Generated> {
        let source = format!(
            "SELECT v.id AS subject_id, 'visit'::text AS stage, v.visit AS event_date, \
                 'maintenance:' || v.id || ':' || to_char(v.visit, 'YYYY-MM-DD') AS dedup_key, \
                 v.contact_id, c.id AS contact_found, (c.opted_out_at IS NOT NULL) AS opted_out, \
                 {CHANNEL} AS channel, NULL::text AS body, NULL::text AS media_url \
             FROM (SELECT id, contact_id, COALESCE(next_visit_date, \
                       (last_visit_date + interval '4 months')::date) AS visit FROM vehicles) v \
             LEFT JOIN contacts c ON c.id = v.contact_id \
             WHERE v.visit BETWEEN $2 AND $3"
        );
        let rows = sqlx::query(&generation_sql("maintenance", &source, dry_run, keep))
            .bind(now)
            .bind(visit.0)
            .bind(visit.1)
            .fetch_all(&mut *self.primary.lock().await)
            .await?;
        generated(rows)
    }

    async fn due_scheduled(
        &self,
        now: DateTime<Utc>,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<DueScheduled>> {
        let rows = sqlx::query(
            "SELECT id, scheduled_at, COALESCE(next_run_at, scheduled_at) AS run_at, recurrence \
             FROM scheduled_messages \
             WHERE status = 'active' AND COALESCE(next_run_at, scheduled_at) <= $1 AND id > $2 \
             ORDER BY id LIMIT $3",
        )
        .bind(now)
        .bind(after_id)
        .bind(limit)
        .fetch_all(&mut *self.primary.lock().await)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DueScheduled {
                    id: r.try_get("id")?,
                    scheduled_at: r.try_get("scheduled_at")?,
                    run_at: r.try_get("run_at")?,
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
        let mut conn = self.primary.lock().await;
        let mut tx = conn.begin().await?;
        let mut ids: Vec<i64> = advances.iter().map(|a| a.id).collect();
        if !dry_run {
            // Compare-and-set on the run time: of two passes, only one moves the series on.
            ids = sqlx::query_scalar(
                "UPDATE scheduled_messages s \
                 SET next_run_at = d.next, \
                     status = CASE WHEN d.next IS NULL THEN 'done' ELSE 'active' END \
                 FROM UNNEST($1::bigint[], $2::timestamptz[], $3::timestamptz[]) AS d(id, run_at, next) \
                 WHERE s.id = d.id AND s.status = 'active' \
                   AND COALESCE(s.next_run_at, s.scheduled_at) = d.run_at \
                 RETURNING s.id",
            )
            .bind(&ids)
            .bind(advances.iter().map(|a| a.run_at).collect::<Vec<_>>())
            .bind(advances.iter().map(|a| a.next_run_at).collect::<Vec<_>>())
            .fetch_all(&mut *tx)
            .await?;
        }
        let won: Vec<&ScheduledAdvance> = advances.iter().filter(|a| ids.contains(&a.id)).collect();
        let source = "SELECT s.id AS subject_id, d.stage, NULL::date AS event_date, \
                 d.key AS dedup_key, s.contact_id, c.id AS contact_found, \
                 (c.opted_out_at IS NOT NULL) AS opted_out, \
                 COALESCE(NULLIF(lower(trim(s.channel)), ''), 'whatsapp') AS channel, \
                 COALESCE(NULLIF(s.body, ''), s.caption, '') AS body, s.media_url \
             FROM UNNEST($2::bigint[], $3::text[], $4::text[]) AS d(id, key, stage) \
             JOIN scheduled_messages s ON s.id = d.id \
             LEFT JOIN contacts c ON c.id = s.contact_id";
        let rows = sqlx::query(&generation_sql("scheduled", source, dry_run, keep))
            .bind(now)
            .bind(won.iter().map(|a| a.id).collect::<Vec<_>>())
            .bind(won.iter().map(|a| a.dedup_key.clone()).collect::<Vec<_>>())
            .bind(won.iter().map(|a| a.stage.clone()).collect::<Vec<_>>())
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let mut out = generated(rows)?;
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
            "UPDATE messages m SET status = 'cancelled', last_error = 'invoice is ' || i.status \
             FROM invoices i \
             WHERE m.kind = 'dunning' AND m.status = 'pending' AND i.id = m.subject_id \
               AND i.status <> 'unpaid' \
             RETURNING m.id, m.kind, m.subject_id, m.stage, m.channel, m.status, \
                 m.last_error AS error"
        };
        Ok(sqlx::query_as::<_, GenRow>(sql).fetch_all(&mut *self.primary.lock().await).await?)
    }

    async fn reserve_slots(
        &self,
        channel: &str,
        count: u32,
        interval_ms: i64,
        now_ms: i64,
        horizon_ms: i64,
    ) -> Result<Option<SlotGrant>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO channel_state (channel) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(channel)
            .execute(&mut *tx)
            .await?;
        let next: i64 = sqlx::query_scalar(
            "SELECT next_slot_ms FROM channel_state WHERE channel = $1 FOR UPDATE",
        )
        .bind(channel)
        .fetch_one(&mut *tx)
        .await?;
        let Some(grant) = super::slots(next, count, interval_ms, now_ms, horizon_ms) else {
            tx.commit().await?;
            return Ok(None);
        };
        sqlx::query("UPDATE channel_state SET next_slot_ms = $2 WHERE channel = $1")
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
            "UPDATE channel_state SET next_slot_ms = next_slot_ms - $3 \
             WHERE channel = $1 AND next_slot_ms = $2",
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
        // The due conditions are checked again in the outer UPDATE: a row locked and released
        // by another pass between the two may no longer be due.
        let sql = format!(
            "WITH due AS MATERIALIZED ( \
                 SELECT id FROM messages \
                 WHERE channel = $1 AND status IN ('pending', 'sending') AND next_attempt_at <= $2 \
                 ORDER BY next_attempt_at, id LIMIT $3 FOR UPDATE SKIP LOCKED \
             ), cl AS ( \
                 UPDATE messages m SET status = 'sending', attempts = m.attempts + 1, \
                     claimed_by = $4, claimed_until = $5, next_attempt_at = $5 \
                 FROM due WHERE m.id = due.id AND m.status IN ('pending', 'sending') \
                     AND m.next_attempt_at <= $2 \
                 RETURNING m.* \
             ) \
             SELECT {CLAIM_CONTEXT} FROM cl {CLAIM_JOINS} ORDER BY cl.id"
        );
        Ok(sqlx::query_as::<_, Claimed>(&sql)
            .bind(channel)
            .bind(now)
            .bind(limit)
            .bind(token)
            .bind(lease_until)
            .fetch_all(&mut *self.primary.lock().await)
            .await?)
    }

    async fn record(&self, token: &str, outcomes: &[Outcome]) -> Result<Vec<i64>> {
        if outcomes.is_empty() {
            return Ok(Vec::new());
        }
        let col =
            |f: &dyn Fn(&Outcome) -> Option<String>| outcomes.iter().map(f).collect::<Vec<_>>();
        let lost: Vec<i64> = sqlx::query_scalar(
            "WITH v AS ( \
                 SELECT * FROM UNNEST($2::bigint[], $3::int[], $4::text[], $5::text[], \
                     $6::boolean[], $7::timestamptz[], $8::text[], $9::text[], $10::text[], \
                     $11::text[], $12::text[], $13::text[], $14::timestamptz[], $15::text[], \
                     $16::timestamptz[], $17::text[]) \
                 AS v(id, attempt, channel, status, refund, next_at, error, provider, pid, \
                     recipient, subject, body, sent_at, history, at, fallback) \
             ), upd AS ( \
                 UPDATE messages m SET status = v.status, \
                     attempts = CASE WHEN v.refund THEN GREATEST(m.attempts - 1, 0) ELSE m.attempts END, \
                     next_attempt_at = COALESCE(v.next_at, m.next_attempt_at), \
                     last_error = v.error, \
                     provider = COALESCE(v.provider, m.provider), \
                     provider_message_id = COALESCE(v.pid, m.provider_message_id), \
                     recipient = COALESCE(v.recipient, m.recipient), \
                     subject = COALESCE(v.subject, m.subject), \
                     body = COALESCE(v.body, m.body), \
                     sent_at = COALESCE(v.sent_at, m.sent_at), \
                     claimed_by = NULL, claimed_until = NULL \
                 FROM v WHERE m.id = v.id AND m.claimed_by = $1 AND m.status = 'sending' \
                 RETURNING m.id \
             ), hist AS ( \
                 INSERT INTO delivery_attempts (message_id, attempt, channel, provider, outcome, \
                     error, provider_message_id, claimed_by, at) \
                 SELECT v.id, v.attempt, v.channel, v.provider, \
                     CASE WHEN upd.id IS NULL THEN 'late ' || v.history ELSE v.history END, \
                     v.error, v.pid, $1, v.at \
                 FROM v LEFT JOIN upd ON upd.id = v.id WHERE v.history IS NOT NULL \
             ), fb AS ( \
                 INSERT INTO messages (kind, subject_id, stage, event_date, dedup_key, origin, \
                     contact_id, channel, body, media_url, status, next_attempt_at, created_at) \
                 SELECT m.kind, m.subject_id, m.stage, m.event_date, m.dedup_key, 'fallback', \
                     m.contact_id, v.fallback, CASE WHEN m.kind IN ('dunning', 'maintenance') THEN NULL \
                         ELSE m.body END, \
                     m.media_url, 'pending', v.at, v.at \
                 FROM v JOIN upd ON upd.id = v.id JOIN messages m ON m.id = v.id \
                 WHERE v.fallback IS NOT NULL \
                 ON CONFLICT (dedup_key, channel) DO NOTHING \
             ) \
             SELECT v.id FROM v LEFT JOIN upd ON upd.id = v.id WHERE upd.id IS NULL",
        )
        .bind(token)
        .bind(outcomes.iter().map(|o| o.id).collect::<Vec<_>>())
        .bind(outcomes.iter().map(|o| o.attempt).collect::<Vec<_>>())
        .bind(col(&|o| Some(o.channel.clone())))
        .bind(col(&|o| Some(o.status.to_string())))
        .bind(outcomes.iter().map(|o| o.refund).collect::<Vec<_>>())
        .bind(outcomes.iter().map(|o| o.next_attempt_at).collect::<Vec<_>>())
        .bind(col(&|o| o.error.clone()))
        .bind(col(&|o| o.provider.map(str::to_string)))
        .bind(col(&|o| o.provider_message_id.clone()))
        .bind(col(&|o| o.recipient.clone()))
        .bind(col(&|o| o.subject.clone()))
        .bind(col(&|o| o.body.clone()))
        .bind(outcomes.iter().map(|o| o.sent_at).collect::<Vec<_>>())
        .bind(col(&|o| o.history.map(str::to_string)))
        .bind(outcomes.iter().map(|o| o.at).collect::<Vec<_>>())
        .bind(col(&|o| o.fallback.clone()))
        .fetch_all(&self.pool)
        .await?;
        Ok(lost)
    }

    async fn set_channel_down(
        &self,
        channel: &str,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO channel_state (channel, down_reason, down_since) VALUES ($1, $2, $3) \
             ON CONFLICT (channel) DO UPDATE SET down_reason = EXCLUDED.down_reason, \
                 down_since = CASE WHEN EXCLUDED.down_reason IS NULL THEN NULL \
                     ELSE COALESCE(channel_state.down_since, EXCLUDED.down_since) END",
        )
        .bind(channel)
        .bind(reason)
        .bind(reason.map(|_| now))
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
             WHERE channel = $1 AND status IN ('pending', 'sending') AND next_attempt_at <= $2 \
             ORDER BY next_attempt_at, id LIMIT $3",
        )
        .bind(channel)
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *self.primary.lock().await)
        .await?)
    }

    async fn status(&self, now: DateTime<Utc>, failures: i64) -> Result<StatusData> {
        let counts = sqlx::query_as(
            "SELECT kind, status, channel, count(*) AS count FROM messages \
             GROUP BY kind, status, channel ORDER BY kind, status, channel",
        )
        .fetch_all(&mut *self.primary.lock().await)
        .await?;
        let failures = sqlx::query_as(
            "SELECT id, kind, stage, channel, recipient, status, last_error AS error, \
                 to_char(COALESCE(sent_at, next_attempt_at) AT TIME ZONE 'UTC', \
                     'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS at \
             FROM messages WHERE status = 'failed' \
                 OR (status IN ('pending', 'skipped') AND last_error IS NOT NULL) \
             ORDER BY id DESC LIMIT $1",
        )
        .bind(failures)
        .fetch_all(&mut *self.primary.lock().await)
        .await?;
        let down = sqlx::query_as(
            "SELECT channel, down_reason AS reason, \
                 to_char(down_since AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS since \
             FROM channel_state WHERE down_reason IS NOT NULL ORDER BY channel",
        )
        .fetch_all(&mut *self.primary.lock().await)
        .await?;
        let due = sqlx::query_as::<_, (String, i64)>(
            "SELECT channel, count(*) FROM messages \
             WHERE status IN ('pending', 'sending') AND next_attempt_at <= $1 \
             GROUP BY channel ORDER BY channel",
        )
        .bind(now)
        .fetch_all(&mut *self.primary.lock().await)
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
        let sql = format!(
            "WITH cl AS ( \
                 UPDATE messages m SET status = 'sending', attempts = m.attempts + 1, \
                     claimed_by = $2, claimed_until = $4, next_attempt_at = $4 \
                 WHERE m.id = ANY($1) AND (m.status = 'pending' \
                     OR (m.status = 'sending' AND m.next_attempt_at <= $3)) \
                 RETURNING m.* \
             ) \
             SELECT {CLAIM_CONTEXT} FROM cl {CLAIM_JOINS} ORDER BY cl.id"
        );
        Ok(sqlx::query_as::<_, Claimed>(&sql)
            .bind(ids)
            .bind(token)
            .bind(now)
            .bind(lease_until)
            .fetch_all(&mut *self.primary.lock().await)
            .await?)
    }

    async fn insert_messages(&self, rows: &[NewMessage], now: DateTime<Utc>) -> Result<Vec<i64>> {
        let mut ids = Vec::new();
        for r in rows {
            let id: Option<i64> = sqlx::query_scalar(
                "INSERT INTO messages (kind, subject_id, stage, event_date, dedup_key, origin, \
                     contact_id, channel, recipient, body, status, next_attempt_at, created_at) \
                 VALUES ($1, $2, $3, $4, $5, 'manual', $6, $7, $8, $9, 'pending', $10, $10) \
                 ON CONFLICT (dedup_key, channel) DO NOTHING RETURNING id",
            )
            .bind(r.kind)
            .bind(r.subject_id)
            .bind(&r.stage)
            .bind(r.event_date)
            .bind(&r.dedup_key)
            .bind(r.contact_id)
            .bind(&r.channel)
            .bind(&r.recipient)
            .bind(&r.body)
            .bind(now)
            .fetch_optional(&mut *self.primary.lock().await)
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
        let mut conn = self.primary.lock().await;
        let mut tx = conn.begin().await?;
        let found: Option<(i64, String)> = sqlx::query_as(
            "SELECT id, name FROM contacts WHERE lower(email) = lower($1) ORDER BY id LIMIT 1 \
             FOR UPDATE",
        )
        .bind(email)
        .fetch_optional(&mut *tx)
        .await?;
        if dry_run {
            return Ok(found.map(|(id, name)| TestContact { id, name, existed: true }));
        }
        let contact = if let Some((id, name)) = found {
            sqlx::query(
                "UPDATE contacts SET phone = $2, channels = 'email,whatsapp', opted_out_at = NULL \
                 WHERE id = $1",
            )
            .bind(id)
            .bind(phone)
            .execute(&mut *tx)
            .await?;
            TestContact { id, name, existed: true }
        } else {
            let id = sqlx::query_scalar(
                "INSERT INTO contacts (name, email, phone, channels) \
                 VALUES ($1, $2, $3, 'email,whatsapp') RETURNING id",
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
            "INSERT INTO invoices (contact_id, number, amount, due_date) VALUES ($1, $2, $3, $4) \
             RETURNING id",
        )
        .bind(contact_id)
        .bind(number)
        .bind(amount)
        .bind(due)
        .fetch_one(&mut *self.primary.lock().await)
        .await?)
    }

    async fn seed(&self, demo: &DemoData, reset: bool) -> Result<SeedCounts> {
        let mut conn = self.primary.lock().await;
        let mut tx = conn.begin().await?;
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
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (demo_key) DO NOTHING",
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
        let contact = "(SELECT id FROM contacts WHERE demo_key = $2)";
        for i in &demo.invoices {
            counts.invoices += sqlx::query(&format!(
                "INSERT INTO invoices (demo_key, contact_id, number, amount, due_date) \
                 VALUES ($1, {contact}, $3, $4, $5) ON CONFLICT (demo_key) DO NOTHING"
            ))
            .bind(&i.key)
            .bind(&i.contact_key)
            .bind(&i.number)
            .bind(i.amount)
            .bind(i.due_date)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        for v in &demo.vehicles {
            counts.vehicles += sqlx::query(&format!(
                "INSERT INTO vehicles (demo_key, contact_id, plate_no, last_visit_date, \
                     next_visit_date) \
                 VALUES ($1, {contact}, $3, $4, $5) ON CONFLICT (demo_key) DO NOTHING"
            ))
            .bind(&v.key)
            .bind(&v.contact_key)
            .bind(&v.plate_no)
            .bind(v.last_visit_date)
            .bind(v.next_visit_date)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        for s in &demo.scheduled {
            counts.scheduled += sqlx::query(&format!(
                "INSERT INTO scheduled_messages (demo_key, contact_id, channel, body, \
                     scheduled_at, recurrence, created_by) \
                 VALUES ($1, {contact}, $3, $4, $5, $6, 'reminderctl seed') \
                 ON CONFLICT (demo_key) DO NOTHING"
            ))
            .bind(&s.key)
            .bind(&s.contact_key)
            .bind(&s.channel)
            .bind(&s.body)
            .bind(s.scheduled_at)
            .bind(&s.recurrence)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(counts)
    }
}
