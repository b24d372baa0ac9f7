//! PostgreSQL: claims with `FOR UPDATE SKIP LOCKED` inside a materialized CTE, batch writes with
//! `UNNEST`, and migrations under sqlx's advisory lock so that concurrent starts are safe.
//!
//! Leases and rate-limit slots are timed by the server's clock (`now()` in the statement), so
//! hosts whose clocks disagree share them correctly. A connection whose statement failed is
//! dropped and opened afresh on next use: a terminated backend or a dropped database never
//! leaves the store stuck on a dead connection.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Months, NaiveDate, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow, PgSslMode};
use sqlx::{ConnectOptions, Connection, PgConnection, Row};
use tokio::sync::{Mutex, MutexGuard};

use super::{
    BadValue, Cell, ChannelDown, ClaimRequest, Claimed, ClaimedRow, ContactRow, DemoData,
    DueScheduled, Failure, GenRow, Generated, InputScan, InvoiceRow, NewMessage, Preview, Recorded,
    Result, ScheduledAdvance, SeedCounts, SlotGrant, SlotState, StatusData, Store, StoreError,
    TestContact, VehicleRow, Written,
};
use crate::domain::channel::ChannelKind;
use crate::domain::outbox::Outcome;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

pub struct PgStore {
    options: PgConnectOptions,
    /// One connection for the pass's sequential work (migrations, generation, claims,
    /// reports): every PostgreSQL connection costs a backend start, and the every-minute idle
    /// tick should need only this one. `None` after a failure, until the next use reconnects.
    primary: Mutex<Option<PgConnection>>,
    /// Connections for work that runs beside it (writing delivery results, rate slots), opened
    /// only when used.
    pool: PgPool,
}

/// The primary connection, held for one piece of work. Unless [`Primary::done`] is called, the
/// connection is dropped with the guard: whatever failed cannot poison the next use.
struct Primary<'a> {
    guard: MutexGuard<'a, Option<PgConnection>>,
    ok: bool,
}

impl Primary<'_> {
    fn conn(&mut self) -> Result<&mut PgConnection> {
        self.guard.as_mut().ok_or_else(|| StoreError::Other("no database connection".into()))
    }

    fn done(mut self) {
        self.ok = true;
    }
}

impl Drop for Primary<'_> {
    fn drop(&mut self) {
        if !self.ok {
            *self.guard = None;
        }
    }
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
            .connect_lazy_with(options.clone());
        Ok(Self { options, primary: Mutex::new(Some(primary)), pool })
    }

    /// The pool, for tests and benchmarks that prepare data directly.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn primary(&self) -> Result<Primary<'_>> {
        let mut guard = self.primary.lock().await;
        if guard.is_none() {
            *guard = Some(self.options.connect().await?);
        }
        Ok(Primary { guard, ok: false })
    }

    /// A pooled connection for one write, closed instead of returned if the write fails.
    async fn pooled(&self) -> Result<Pooled> {
        Ok(Pooled { conn: self.pool.acquire().await?, ok: false })
    }
}

struct Pooled {
    conn: sqlx::pool::PoolConnection<sqlx::Postgres>,
    ok: bool,
}

impl Pooled {
    fn conn(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
    fn done(mut self) {
        self.ok = true;
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if !self.ok {
            self.conn.close_on_drop();
        }
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

/// The channel a reminder goes on, from `value`: a contact's ordered preference (`list`: its
/// first name counts) or a scheduled message's one channel. WhatsApp when it names none at all;
/// else the name, lower-cased, without surrounding whitespace (as `ChannelKind` reads names),
/// cut to what fits a channel name (an index row has a size limit), which generation fails
/// with the reason unless it is a channel: an empty name too (`,email`).
fn channel_sql(value: &str, list: bool) -> String {
    const WS: &str = "E' \\t\\r\\n'";
    let first = if list { format!("split_part({value}, ',', 1)") } else { value.to_string() };
    format!(
        "(CASE WHEN btrim(COALESCE({value}, ''), {WS}) = '' THEN 'whatsapp' \
             ELSE substr(lower(btrim({first}, {WS})), 1, 40) END)"
    )
}

/// Status and reason of a new outbox row, decided in SQL so that generation stays set-based.
const STATUS: &str = "CASE WHEN s.contact_found IS NULL THEN 'failed' \
     WHEN s.channel NOT IN ('whatsapp', 'telegram', 'email') THEN 'failed' \
     WHEN s.opted_out THEN 'skipped' ELSE 'pending' END";
/// `s.channel_at` names where the channel came from, the way a bad value is named
/// (`contacts 12 channels`).
const REASON: &str = "CASE WHEN s.contact_found IS NULL THEN \
       'contact ' || COALESCE(CAST(s.contact_id AS TEXT), '(none)') || ' not found' \
     WHEN s.channel = '' THEN s.channel_at || ': an empty channel name' \
     WHEN s.channel NOT IN ('whatsapp', 'telegram', 'email') THEN \
       s.channel_at || ': unknown channel ''' || s.channel \
         || ''' (known: whatsapp, telegram, email)' \
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

fn generated(rows: Vec<PgRow>) -> Result<Generated> {
    let mut out = Generated::default();
    let count =
        |row: &PgRow, name: &str| -> Result<u64> { Ok(row.try_get::<i64, _>(name)?.max(0) as u64) };
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

/// Our columns of a claimed row, then what delivery needs from the input tables.
const CLAIM_CONTEXT: &str = "cl.id, cl.kind, cl.subject_id, cl.stage, cl.event_date, cl.channel, \
    cl.subject, cl.body, cl.media_url, cl.recipient, cl.attempts, cl.expired_leases, \
    cl.contact_id, c.id AS c_id, c.name, c.phone, c.email, c.telegram_chat_id, c.channels, \
    (c.opted_out_at IS NOT NULL) AS opted_out, i.id AS i_id, i.number, i.amount, i.due_date, \
    i.status AS i_status, v.id AS v_id, v.plate_no, v.next_visit_date, v.last_visit_date";

const CLAIM_JOINS: &str = "LEFT JOIN contacts c ON c.id = cl.contact_id \
    LEFT JOIN invoices i ON cl.kind = 'dunning' AND i.id = cl.subject_id \
    LEFT JOIN vehicles v ON cl.kind = 'maintenance' AND v.id = cl.subject_id";

/// One typed input value; a decode failure is that row's reason, not the claim's.
fn cell<'r, T>(row: &'r PgRow, col: &str, at: (&'static str, i64, &'static str)) -> Cell<T>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get::<Option<T>, _>(col)
        .map_err(|e| BadValue::new(at.0, at.1, at.2, "?", format!("cannot be read: {e}")))
}

/// Decodes each claimed row on its own.
fn claimed(row: &PgRow) -> Claimed {
    let id = row.try_get::<i64, _>("id").unwrap_or(0);
    let decoded = (|| -> std::result::Result<ClaimedRow, String> {
        let e = |col: &'static str| move |err: sqlx::Error| format!("{col}: {err}");
        Ok(ClaimedRow {
            id,
            kind: row.try_get::<String, _>("kind").map_err(e("kind"))?.parse()?,
            subject_id: row.try_get("subject_id").map_err(e("subject_id"))?,
            stage: row.try_get("stage").map_err(e("stage"))?,
            event_date: row.try_get("event_date").map_err(e("event_date"))?,
            channel: row.try_get::<String, _>("channel").map_err(e("channel"))?.parse()?,
            subject: row.try_get("subject").map_err(e("subject"))?,
            body: row.try_get("body").map_err(e("body"))?,
            media_url: row.try_get("media_url").map_err(e("media_url"))?,
            recipient: row.try_get("recipient").map_err(e("recipient"))?,
            attempts: row.try_get("attempts").map_err(e("attempts"))?,
            expired_leases: row.try_get("expired_leases").map_err(e("expired_leases"))?,
            contact_id: row.try_get("contact_id").map_err(e("contact_id"))?,
        })
    })();
    let contact = row.try_get::<Option<i64>, _>("c_id").ok().flatten().map(|cid| {
        let at = |column| ("contacts", cid, column);
        ContactRow {
            id: cid,
            name: cell(row, "name", at("name")),
            phone: cell(row, "phone", at("phone")),
            email: cell(row, "email", at("email")),
            telegram_chat_id: cell(row, "telegram_chat_id", at("telegram_chat_id")),
            channels: cell(row, "channels", at("channels")),
            opted_out: row.try_get::<Option<bool>, _>("opted_out").ok().flatten().unwrap_or(false),
        }
    });
    let invoice = row.try_get::<Option<i64>, _>("i_id").ok().flatten().map(|iid| {
        let at = |column| ("invoices", iid, column);
        InvoiceRow {
            id: iid,
            number: cell(row, "number", at("number")),
            amount: cell(row, "amount", at("amount")),
            due_date: cell(row, "due_date", at("due_date")),
            status: cell(row, "i_status", at("status")),
        }
    });
    let vehicle = row.try_get::<Option<i64>, _>("v_id").ok().flatten().map(|vid| {
        let at = |column| ("vehicles", vid, column);
        let next: Cell<NaiveDate> = cell(row, "next_visit_date", at("next_visit_date"));
        let last: Cell<NaiveDate> = cell(row, "last_visit_date", at("last_visit_date"));
        VehicleRow {
            id: vid,
            plate_no: cell(row, "plate_no", at("plate_no")),
            visit_date: match next {
                Ok(None) => last.map(|d| d.and_then(|d| d.checked_add_months(Months::new(4)))),
                other => other,
            },
        }
    });
    Claimed {
        row: decoded.map_err(|e| (id, format!("outbox row {id} cannot be read: {e}"))),
        contact,
        invoice,
        vehicle,
    }
}

/// Milliseconds, for `now() + $n * interval '1 millisecond'`.
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn migrate(&self) -> Result<()> {
        // Fast path for the every-minute tick: nothing to do when the newest migration is in.
        let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        let mut p = self.primary().await?;
        let applied: Option<i64> = sqlx::query_scalar(
            "SELECT max(version) FROM _sqlx_migrations WHERE success \
             AND to_regclass('_sqlx_migrations') IS NOT NULL",
        )
        .fetch_one(p.conn()?)
        .await
        .unwrap_or(None);
        p.done();
        if applied == Some(latest) {
            return Ok(());
        }
        // First start only (the check above is the fast path): the pool's advisory lock makes
        // concurrent first starts safe.
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    async fn scan_inputs(&self) -> Result<InputScan> {
        // Typed columns: PostgreSQL refused unreadable dates when the app wrote them.
        Ok(InputScan::default())
    }

    async fn generate_dunning(
        &self,
        stage: &str,
        due: (NaiveDate, NaiveDate),
        _scan: &InputScan,
        now: DateTime<Utc>,
        dry_run: bool,
        keep: usize,
    ) -> Result<Generated> {
        let source = format!(
            "SELECT i.id AS subject_id, $2::text AS stage, i.due_date AS event_date, \
                 'dunning:' || i.id || ':' || to_char(i.due_date, 'YYYY-MM-DD') || ':' || $2::text \
                     AS dedup_key, \
                 i.contact_id, c.id AS contact_found, (c.opted_out_at IS NOT NULL) AS opted_out, \
                 {} AS channel, 'contacts ' || c.id || ' channels' AS channel_at, \
                 NULL::text AS body, NULL::text AS media_url \
             FROM invoices i LEFT JOIN contacts c ON c.id = i.contact_id \
             WHERE i.status = 'unpaid' AND i.due_date BETWEEN $3 AND $4",
            channel_sql("c.channels", true)
        );
        let mut p = self.primary().await?;
        let rows = sqlx::query(&generation_sql("dunning", &source, dry_run, keep))
            .bind(now)
            .bind(stage)
            .bind(due.0)
            .bind(due.1)
            .fetch_all(p.conn()?)
            .await?;
        p.done();
        generated(rows)
    }

    async fn generate_maintenance(
        &self,
        visit: (NaiveDate, NaiveDate),
        _scan: &InputScan,
        now: DateTime<Utc>,
        dry_run: bool,
        keep: usize,
    ) -> Result<Generated> {
        let source = format!(
            "SELECT v.id AS subject_id, 'visit'::text AS stage, v.visit AS event_date, \
                 'maintenance:' || v.id || ':' || to_char(v.visit, 'YYYY-MM-DD') AS dedup_key, \
                 v.contact_id, c.id AS contact_found, (c.opted_out_at IS NOT NULL) AS opted_out, \
                 {} AS channel, 'contacts ' || c.id || ' channels' AS channel_at, \
                 NULL::text AS body, NULL::text AS media_url \
             FROM (SELECT id, contact_id, COALESCE(next_visit_date, \
                       (last_visit_date + interval '4 months')::date) AS visit FROM vehicles) v \
             LEFT JOIN contacts c ON c.id = v.contact_id \
             WHERE v.visit BETWEEN $2 AND $3",
            channel_sql("c.channels", true)
        );
        let mut p = self.primary().await?;
        let rows = sqlx::query(&generation_sql("maintenance", &source, dry_run, keep))
            .bind(now)
            .bind(visit.0)
            .bind(visit.1)
            .fetch_all(p.conn()?)
            .await?;
        p.done();
        generated(rows)
    }

    async fn due_scheduled(
        &self,
        now: DateTime<Utc>,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<DueScheduled>> {
        let mut p = self.primary().await?;
        let rows = sqlx::query(
            "SELECT id, scheduled_at, COALESCE(next_run_at, scheduled_at) AS run_at, recurrence \
             FROM scheduled_messages \
             WHERE status = 'active' AND COALESCE(next_run_at, scheduled_at) <= $1 AND id > $2 \
             ORDER BY id LIMIT $3",
        )
        .bind(now)
        .bind(after_id)
        .bind(limit)
        .fetch_all(p.conn()?)
        .await?;
        p.done();
        rows.iter()
            .map(|r| {
                Ok(DueScheduled {
                    id: r.try_get("id")?,
                    scheduled_at: r.try_get("scheduled_at")?,
                    run_at: r.try_get("run_at")?,
                    recurrence: r.try_get("recurrence")?,
                    stored_run_at: None,
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
        let mut p = self.primary().await?;
        let mut tx = p.conn()?.begin().await?;
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
        let source = format!(
            "SELECT s.id AS subject_id, d.stage, NULL::date AS event_date, \
                 d.key AS dedup_key, s.contact_id, c.id AS contact_found, \
                 (c.opted_out_at IS NOT NULL) AS opted_out, \
                 {} AS channel, 'scheduled_messages ' || s.id || ' channel' AS channel_at, \
                 COALESCE(NULLIF(s.body, ''), s.caption, '') AS body, s.media_url \
             FROM UNNEST($2::bigint[], $3::text[], $4::text[]) AS d(id, key, stage) \
             JOIN scheduled_messages s ON s.id = d.id \
             LEFT JOIN contacts c ON c.id = s.contact_id",
            channel_sql("s.channel", false)
        );
        let rows = sqlx::query(&generation_sql("scheduled", &source, dry_run, keep))
            .bind(now)
            .bind(won.iter().map(|a| a.id).collect::<Vec<_>>())
            .bind(won.iter().map(|a| a.dedup_key.clone()).collect::<Vec<_>>())
            .bind(won.iter().map(|a| a.stage.clone()).collect::<Vec<_>>())
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        p.done();
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
        let mut p = self.primary().await?;
        let rows = sqlx::query_as::<_, GenRow>(sql).fetch_all(p.conn()?).await?;
        p.done();
        Ok(rows)
    }

    async fn reserve_slots(
        &self,
        channel: ChannelKind,
        count: u32,
        interval_ns: i64,
        horizon: Duration,
    ) -> Result<Option<SlotGrant>> {
        let mut c = self.pooled().await?;
        let mut tx = c.conn().begin().await?;
        sqlx::query("INSERT INTO channel_state (channel) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(channel.as_str())
            .execute(&mut *tx)
            .await?;
        // The server's clock, in exact integer nanoseconds (extract returns numeric).
        let (next, now_ns): (i64, i64) = sqlx::query_as(
            "SELECT next_slot_ns, (extract(epoch FROM clock_timestamp()) * 1000000000)::bigint \
             FROM channel_state WHERE channel = $1 FOR UPDATE",
        )
        .bind(channel.as_str())
        .fetch_one(&mut *tx)
        .await?;
        let grant = super::slots(next, count, interval_ns, now_ns, horizon);
        if let Some(g) = grant {
            sqlx::query("UPDATE channel_state SET next_slot_ns = $2 WHERE channel = $1")
                .bind(channel.as_str())
                .bind(g.end_ns)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        c.done();
        Ok(grant)
    }

    async fn return_slots(
        &self,
        channel: ChannelKind,
        grant: SlotGrant,
        unused: u32,
    ) -> Result<()> {
        let mut c = self.pooled().await?;
        sqlx::query(
            "UPDATE channel_state SET next_slot_ns = next_slot_ns - $3 \
             WHERE channel = $1 AND next_slot_ns = $2",
        )
        .bind(channel.as_str())
        .bind(grant.end_ns)
        .bind(i64::from(unused).saturating_mul(grant.interval_ns))
        .execute(c.conn())
        .await?;
        c.done();
        Ok(())
    }

    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Vec<Claimed>> {
        // The due conditions are checked again in the outer UPDATE: a row locked and released
        // by another pass between the two may no longer be due. Rows whose lease ran out on the
        // server's clock come first: they are the oldest work.
        let sql = format!(
            "WITH expired AS MATERIALIZED ( \
                 SELECT id FROM messages \
                 WHERE channel = $1 AND status = 'sending' AND claimed_until <= now() \
                 ORDER BY claimed_until LIMIT $3 FOR UPDATE SKIP LOCKED \
             ), waiting AS MATERIALIZED ( \
                 SELECT id FROM messages \
                 WHERE channel = $1 AND status = 'pending' AND next_attempt_at <= $2 \
                 ORDER BY next_attempt_at, id LIMIT $3 FOR UPDATE SKIP LOCKED \
             ), due AS ( \
                 SELECT id FROM expired UNION ALL SELECT id FROM waiting LIMIT $3 \
             ), cl AS ( \
                 UPDATE messages m SET status = 'sending', claimed_by = $4, \
                     claimed_until = now() + $5 * interval '1 millisecond', \
                     expired_leases = m.expired_leases \
                         + CASE WHEN m.status = 'sending' THEN 1 ELSE 0 END \
                 FROM due WHERE m.id = due.id \
                     AND ((m.status = 'pending' AND m.next_attempt_at <= $2) \
                         OR (m.status = 'sending' AND m.claimed_until <= now())) \
                 RETURNING m.* \
             ) \
             SELECT {CLAIM_CONTEXT} FROM cl {CLAIM_JOINS} ORDER BY cl.id"
        );
        let mut p = self.primary().await?;
        let rows = sqlx::query(&sql)
            .bind(request.channel.as_str())
            .bind(request.now)
            .bind(request.limit)
            .bind(request.token)
            .bind(millis(request.lease))
            .fetch_all(p.conn()?)
            .await?;
        p.done();
        Ok(rows.iter().map(claimed).collect())
    }

    async fn claim_ids(&self, ids: &[i64], token: &str, lease: Duration) -> Result<Vec<Claimed>> {
        let sql = format!(
            "WITH cl AS ( \
                 UPDATE messages m SET status = 'sending', claimed_by = $2, \
                     claimed_until = now() + $3 * interval '1 millisecond', \
                     expired_leases = m.expired_leases \
                         + CASE WHEN m.status = 'sending' THEN 1 ELSE 0 END \
                 WHERE m.id = ANY($1) AND (m.status = 'pending' \
                     OR (m.status = 'sending' AND m.claimed_until <= now())) \
                 RETURNING m.* \
             ) \
             SELECT {CLAIM_CONTEXT} FROM cl {CLAIM_JOINS} ORDER BY cl.id"
        );
        let mut p = self.primary().await?;
        let rows = sqlx::query(&sql)
            .bind(ids)
            .bind(token)
            .bind(millis(lease))
            .fetch_all(p.conn()?)
            .await?;
        p.done();
        Ok(rows.iter().map(claimed).collect())
    }

    async fn record(&self, token: &str, outcomes: &[Outcome]) -> Result<Recorded> {
        if outcomes.is_empty() {
            return Ok(Recorded::default());
        }
        let w: Vec<Written<'_>> = outcomes.iter().map(Written::from).collect();
        let text = |f: &dyn Fn(&Written<'_>) -> Option<String>| w.iter().map(f).collect::<Vec<_>>();
        let mut c = self.pooled().await?;
        let rows = sqlx::query(
            "WITH v AS ( \
                 SELECT * FROM UNNEST($2::bigint[], $3::int[], $4::int[], $5::text[], $6::text[], \
                     $7::timestamptz[], $8::text[], $9::text[], $10::text[], $11::text[], \
                     $12::text[], $13::text[], $14::timestamptz[], $15::text[], \
                     $16::timestamptz[], $17::text[]) \
                 AS v(id, attempts, attempt, channel, status, next_at, error, provider, pid, \
                     recipient, subject, body, sent_at, label, at, fallback) \
             ), upd AS ( \
                 UPDATE messages m SET status = v.status, attempts = v.attempts, \
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
                     CASE WHEN upd.id IS NULL THEN 'late ' || v.label ELSE v.label END, \
                     v.error, v.pid, $1, v.at \
                 FROM v LEFT JOIN upd ON upd.id = v.id WHERE v.label IS NOT NULL \
             ), fb AS ( \
                 INSERT INTO messages (kind, subject_id, stage, event_date, dedup_key, origin, \
                     contact_id, channel, body, media_url, status, next_attempt_at, created_at) \
                 SELECT m.kind, m.subject_id, m.stage, m.event_date, m.dedup_key, 'fallback', \
                     m.contact_id, v.fallback, CASE WHEN m.kind IN ('dunning', 'maintenance') \
                         THEN NULL ELSE m.body END, \
                     m.media_url, 'pending', v.at, v.at \
                 FROM v JOIN upd ON upd.id = v.id JOIN messages m ON m.id = v.id \
                 WHERE v.fallback IS NOT NULL \
                 ON CONFLICT (dedup_key, channel) DO NOTHING \
                 RETURNING channel \
             ) \
             SELECT v.id, NULL::text AS fallback FROM v LEFT JOIN upd ON upd.id = v.id \
                 WHERE upd.id IS NULL \
             UNION ALL SELECT NULL, channel FROM fb",
        )
        .bind(token)
        .bind(w.iter().map(|o| o.id).collect::<Vec<_>>())
        .bind(w.iter().map(|o| o.attempts).collect::<Vec<_>>())
        .bind(w.iter().map(|o| o.attempt).collect::<Vec<_>>())
        .bind(text(&|o| Some(o.channel.to_string())))
        .bind(text(&|o| Some(o.status.to_string())))
        .bind(w.iter().map(|o| o.next_attempt_at).collect::<Vec<_>>())
        .bind(text(&|o| o.error.map(str::to_string)))
        .bind(text(&|o| o.provider.map(str::to_string)))
        .bind(text(&|o| o.provider_message_id.map(str::to_string)))
        .bind(text(&|o| o.recipient.map(str::to_string)))
        .bind(text(&|o| o.subject.map(str::to_string)))
        .bind(text(&|o| o.body.map(str::to_string)))
        .bind(w.iter().map(|o| o.sent_at).collect::<Vec<_>>())
        .bind(text(&|o| o.label.map(str::to_string)))
        .bind(w.iter().map(|o| o.at).collect::<Vec<_>>())
        .bind(text(&|o| o.fallback.map(str::to_string)))
        .fetch_all(c.conn())
        .await?;
        c.done();
        let mut recorded = Recorded::default();
        for row in &rows {
            if let Some(id) = row.try_get::<Option<i64>, _>("id")? {
                recorded.lost.push(id);
            } else if let Some(channel) = row.try_get::<Option<String>, _>("fallback")? {
                recorded.fallbacks.extend(channel.parse::<ChannelKind>().ok());
            }
        }
        recorded.fallbacks.sort();
        recorded.fallbacks.dedup();
        Ok(recorded)
    }

    async fn set_channel_down(
        &self,
        channel: ChannelKind,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut c = self.pooled().await?;
        sqlx::query(
            "INSERT INTO channel_state (channel, down_reason, down_since) VALUES ($1, $2, $3) \
             ON CONFLICT (channel) DO UPDATE SET down_reason = EXCLUDED.down_reason, \
                 down_since = CASE WHEN EXCLUDED.down_reason IS NULL THEN NULL \
                     ELSE COALESCE(channel_state.down_since, EXCLUDED.down_since) END",
        )
        .bind(channel.as_str())
        .bind(reason)
        .bind(reason.map(|_| now))
        .execute(c.conn())
        .await?;
        c.done();
        Ok(())
    }

    async fn preview_due(
        &self,
        channel: ChannelKind,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Preview>> {
        let mut p = self.primary().await?;
        let rows = sqlx::query_as::<_, Preview>(
            "SELECT id, kind, stage, channel, contact_id FROM messages \
             WHERE channel = $1 AND ((status = 'pending' AND next_attempt_at <= $2) \
                 OR (status = 'sending' AND claimed_until <= now())) \
             ORDER BY next_attempt_at, id LIMIT $3",
        )
        .bind(channel.as_str())
        .bind(now)
        .bind(limit)
        .fetch_all(p.conn()?)
        .await?;
        p.done();
        Ok(rows)
    }

    async fn count_due(&self, channel: ChannelKind, now: DateTime<Utc>) -> Result<u64> {
        let mut p = self.primary().await?;
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM messages \
             WHERE channel = $1 AND ((status = 'pending' AND next_attempt_at <= $2) \
                 OR (status = 'sending' AND claimed_until <= now()))",
        )
        .bind(channel.as_str())
        .bind(now)
        .fetch_one(p.conn()?)
        .await?;
        p.done();
        Ok(n.max(0) as u64)
    }

    async fn status(&self, now: DateTime<Utc>, failures: i64) -> Result<StatusData> {
        let mut p = self.primary().await?;
        let counts = sqlx::query_as(
            "SELECT kind, status, channel, count(*) AS count FROM messages \
             GROUP BY kind, status, channel ORDER BY kind, status, channel",
        )
        .fetch_all(p.conn()?)
        .await?;
        let failures = sqlx::query(
            "SELECT m.id, m.kind, m.stage, m.channel, m.recipient, m.status, \
                 m.last_error AS error, \
                 COALESCE((SELECT max(a.at) FROM delivery_attempts a WHERE a.message_id = m.id), \
                     m.created_at) AS at \
             FROM messages m WHERE m.status = 'failed' \
                 OR (m.status IN ('pending', 'skipped') AND m.last_error IS NOT NULL) \
             ORDER BY m.id DESC LIMIT $1",
        )
        .bind(failures)
        .fetch_all(p.conn()?)
        .await?
        .iter()
        .map(|r| {
            Ok(Failure {
                id: r.try_get("id")?,
                kind: r.try_get("kind")?,
                stage: r.try_get("stage")?,
                channel: r.try_get("channel")?,
                recipient: r.try_get("recipient")?,
                status: r.try_get("status")?,
                error: r.try_get("error")?,
                at: r.try_get("at")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
        let down = sqlx::query(
            "SELECT channel, down_reason, down_since FROM channel_state \
             WHERE down_reason IS NOT NULL ORDER BY channel",
        )
        .fetch_all(p.conn()?)
        .await?
        .iter()
        .map(|r| {
            Ok(ChannelDown {
                channel: r.try_get("channel")?,
                reason: r.try_get("down_reason")?,
                since: r.try_get::<Option<DateTime<Utc>>, _>("down_since")?.unwrap_or(now),
            })
        })
        .collect::<Result<Vec<_>>>()?;
        let due = sqlx::query_as::<_, (String, i64)>(
            "SELECT channel, count(*) FROM messages \
             WHERE (status = 'pending' AND next_attempt_at <= $1) \
                 OR (status = 'sending' AND claimed_until <= now()) \
             GROUP BY channel ORDER BY channel",
        )
        .bind(now)
        .fetch_all(p.conn()?)
        .await?;
        let slots = sqlx::query_as::<_, (String, i64)>(
            "SELECT channel, GREATEST(next_slot_ns \
                 - (extract(epoch FROM clock_timestamp()) * 1000000000)::bigint, 0) \
             FROM channel_state ORDER BY channel",
        )
        .fetch_all(p.conn()?)
        .await?
        .into_iter()
        .map(|(channel, wait)| SlotState {
            channel,
            next_free_in: Duration::from_nanos(wait.max(0) as u64),
        })
        .collect();
        p.done();
        Ok(StatusData { counts, failures, down, due, slots, bad_inputs: Vec::new() })
    }

    async fn insert_messages(&self, rows: &[NewMessage], now: DateTime<Utc>) -> Result<Vec<i64>> {
        let mut ids = Vec::new();
        let mut p = self.primary().await?;
        for r in rows {
            let id: Option<i64> = sqlx::query_scalar(
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
            .bind(now)
            .fetch_optional(p.conn()?)
            .await?;
            ids.extend(id);
        }
        p.done();
        Ok(ids)
    }

    async fn test_contact(
        &self,
        name: &str,
        email: &str,
        phone: &str,
        dry_run: bool,
    ) -> Result<Option<TestContact>> {
        let mut p = self.primary().await?;
        let mut tx = p.conn()?.begin().await?;
        let found: Option<(i64, String)> = sqlx::query_as(
            "SELECT id, name FROM contacts WHERE lower(email) = lower($1) ORDER BY id LIMIT 1 \
             FOR UPDATE",
        )
        .bind(email)
        .fetch_optional(&mut *tx)
        .await?;
        if dry_run {
            tx.rollback().await?;
            p.done();
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
        p.done();
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
        .fetch_one(&self.pool)
        .await?)
    }

    async fn seed(&self, demo: &DemoData, reset: bool) -> Result<SeedCounts> {
        let mut p = self.primary().await?;
        let mut tx = p.conn()?.begin().await?;
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
        p.done();
        Ok(counts)
    }
}
