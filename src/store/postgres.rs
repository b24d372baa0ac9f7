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

use super::sql::{self, prune_deletes, prune_keys, Dialect, OPEN_MESSAGES, PASS_OK};
use super::{
    pass_record, PassCounts, PassHistory, PassStart, PruneCut, Pruned, Retried, RetrySelect,
};
use super::{
    BadValue, Cell, ClaimRequest, Claimed, ClaimedRow, ContactRow, DemoData, DueScheduled, GenRow,
    Generated, ImportCounts, ImportLookup, ImportSource, ImportTable, ImportValues, ImportedRow,
    InputScan, InvoiceRow, NewMessage, NewScheduled, Recorded, Result, ScheduledAdvance,
    ScheduledEdit, ScheduledListing, ScheduledRow, SeedCounts, SlotGrant, SlotState, StatusData,
    Store, StoreError, TestContact, VehicleRow, Written,
};
use crate::domain::channel::{ChannelKind, Route};
use crate::domain::outbox::Outcome;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

impl Dialect for sqlx::Postgres {
    type Instant = DateTime<Utc>;

    fn instant(at: DateTime<Utc>) -> DateTime<Utc> {
        at
    }

    fn rows_affected(done: &sqlx::postgres::PgQueryResult) -> u64 {
        done.rows_affected()
    }

    const FOR_UPDATE: &'static str = " FOR UPDATE";

    const REAL_NOW: &'static str = "now()";

    type Ids = Vec<i64>;
    type Keys = Vec<String>;

    fn ids(ids: &[i64]) -> Vec<i64> {
        ids.to_vec()
    }

    fn keys(keys: &[&str]) -> Vec<String> {
        keys.iter().map(|k| (*k).to_string()).collect()
    }

    fn one_of(expr: &str, param: &str) -> String {
        format!("{expr} = ANY({param})")
    }
}

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

/// What a rule's source says about where its reminder goes: the contact's preference and
/// WhatsApp connection (the rules carry no text of their own: it is rendered at send time).
const CONTACT_CHANNELS: &str = "c.channels AS channels, \
    'contacts ' || c.id || ' channels' AS spec_name, \
    c.whatsapp_connection AS connection, NULL::text AS body, NULL::text AS media_url";

/// Wraps a rule's candidate rows (`source`, parameters from `$2`) into one statement (SPEC §10
/// channels: the first `,` item of the preference is the group that gets the reminder, `+` joins
/// channels that all get it). It inserts each candidate's lead row on the group's first channel
/// and, beside each new lead, the group's other channels and a failed row for what in the group
/// is not a channel (or, dry, selects what would be created); counts every candidate and what
/// was created; and returns the first `keep` new rows. `$1` is now. Occurrences already queued
/// are left to `ON CONFLICT`: the partial unique index on `dedup_key` holds one lead each.
fn generation_sql(kind: &str, source: &str, dry_run: bool, keep: usize) -> String {
    let fanned = "SELECT u.*, CASE WHEN u.pw > 0 AND (u.pt = 0 OR u.pw < u.pt) \
                           AND (u.pe = 0 OR u.pw < u.pe) THEN 'whatsapp' \
                       WHEN u.pt > 0 AND (u.pe = 0 OR u.pt < u.pe) THEN 'telegram' \
                       WHEN u.pe > 0 THEN 'email' END AS lead \
        FROM (SELECT t.*, strpos(t.g, '+whatsapp+') AS pw, strpos(t.g, '+telegram+') AS pt, \
                  strpos(t.g, '+email+') AS pe, \
                  replace(replace(replace(t.g, '+whatsapp', ''), '+telegram', ''), '+email', '') \
                      <> '+' AS bad \
              FROM (SELECT s.*, '+' || lower(translate(s.first, E' \\t\\r\\n', '')) || '+' AS g, \
                        left(btrim(s.first, E' \\t\\r\\n'), 40) AS shown \
                    FROM (SELECT x.*, CASE WHEN btrim(COALESCE(x.channels, ''), E' \\t\\r\\n') = '' \
                              THEN 'whatsapp' ELSE split_part(x.channels, ',', 1) END AS first \
                          FROM src x) s) t) u";
    let leads = format!(
        "SELECT '{kind}'::text AS kind, u.subject_id, u.stage, u.event_date, u.dedup_key, \
                u.contact_id, \
                CASE WHEN u.contact_found IS NULL THEN 'whatsapp' ELSE COALESCE(u.lead, u.shown) END \
                    AS channel, \
                CASE WHEN u.lead = 'whatsapp' THEN NULLIF(NULLIF(lower(btrim(u.connection)), ''), \
                    'default') END AS connection, \
                u.body, u.media_url, 0 AS fanout, \
                CASE WHEN u.contact_found IS NULL OR u.lead IS NULL THEN 'failed' \
                     WHEN u.opted_out THEN 'skipped' ELSE 'pending' END AS status, \
                CASE WHEN u.contact_found IS NULL THEN \
                       'contact ' || COALESCE(CAST(u.contact_id AS TEXT), '(none)') || ' not found' \
                     WHEN u.lead IS NULL AND u.shown = '' THEN \
                       u.spec_name || ': an empty channel name' \
                     WHEN u.lead IS NULL THEN u.spec_name || ': unknown channel ''' \
                       || u.shown || ''' (known: whatsapp, telegram, email; \",\" separates \
                       fallbacks, \"+\" sends on each)' \
                     WHEN u.opted_out THEN 'contact opted out' END AS last_error \
         FROM f u"
    );
    let extras = |lead_is_new: &str| {
        format!(
            "SELECT '{kind}'::text AS kind, u.subject_id, u.stage, u.event_date, u.dedup_key, \
                    u.contact_id, ch.c AS channel, \
                    CASE WHEN ch.c = 'whatsapp' THEN NULLIF(NULLIF(lower(btrim(u.connection)), ''), \
                        'default') END AS connection, \
                    u.body, u.media_url, 1 AS fanout, \
                    CASE WHEN u.opted_out THEN 'skipped' ELSE 'pending' END AS status, \
                    CASE WHEN u.opted_out THEN 'contact opted out' END AS last_error \
             FROM f u JOIN (VALUES ('whatsapp'), ('telegram'), ('email')) AS ch(c) \
                 ON strpos(u.g, '+' || ch.c || '+') > 0 AND ch.c <> u.lead \
             WHERE u.contact_found IS NOT NULL AND {lead_is_new} \
             UNION ALL \
             SELECT '{kind}'::text, u.subject_id, u.stage, u.event_date, u.dedup_key, u.contact_id, \
                    u.shown, NULL, u.body, u.media_url, 1, 'failed', \
                    u.spec_name || ': unknown or empty channel name in ''' || u.shown \
                        || ''' (known: whatsapp, telegram, email); sent on ' || u.lead || ' only' \
             FROM f u \
             WHERE u.contact_found IS NOT NULL AND u.lead IS NOT NULL AND u.bad AND {lead_is_new}"
        )
    };
    let columns = "kind, subject_id, stage, event_date, dedup_key, contact_id, channel, \
                   connection, body, media_url, fanout, status, last_error";
    let written = if dry_run {
        let new = sql::NOT_QUEUED;
        format!(
            "out AS (SELECT NULL::bigint AS id, n.kind, n.subject_id, n.stage, n.channel, \
                 n.status, n.last_error, n.dedup_key, n.contact_id, n.event_date, n.connection \
             FROM ({leads}) n \
             WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.dedup_key = n.dedup_key) \
             UNION ALL \
             SELECT NULL::bigint, n.kind, n.subject_id, n.stage, n.channel, n.status, \
                 n.last_error, n.dedup_key, n.contact_id, n.event_date, n.connection FROM ({}) n)",
            extras(new)
        )
    } else {
        // Extras go beside a lead this very statement created.
        let new = "u.dedup_key IN (SELECT dedup_key FROM lead_out)";
        format!(
            "lead_out AS (INSERT INTO messages ({columns}, next_attempt_at, created_at) \
                 SELECT {columns}, $1, $1 FROM ({leads}) n \
                 ON CONFLICT DO NOTHING \
                 RETURNING id, kind, subject_id, stage, channel, status, last_error, dedup_key, \
                     contact_id, event_date, connection), \
             extra_out AS (INSERT INTO messages ({columns}, next_attempt_at, created_at) \
                 SELECT {columns}, $1, $1 FROM ({}) n \
                 ON CONFLICT DO NOTHING \
                 RETURNING id, kind, subject_id, stage, channel, status, last_error, dedup_key, \
                     contact_id, event_date, connection), \
             out AS (SELECT * FROM lead_out UNION ALL SELECT * FROM extra_out)",
            extras(new)
        )
    };
    let limit = i64::try_from(keep).map_or_else(|_| "ALL".to_string(), |k| k.to_string());
    format!(
        "WITH src AS MATERIALIZED ({source}), f AS MATERIALIZED ({fanned}), {written}, \
             kept AS (SELECT * FROM out LIMIT {limit}) \
         SELECT s.found, a.queued, a.failed, a.skipped, k.id, k.kind, k.subject_id, k.stage, \
                k.channel, k.status, k.last_error AS error, k.dedup_key, k.contact_id, \
                k.event_date, k.connection \
         FROM (SELECT count(*) AS found FROM src) s \
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
            dedup_key: row.try_get::<Option<String>, _>("dedup_key")?.unwrap_or_default(),
            contact_id: row.try_get("contact_id")?,
            event_date: row.try_get("event_date")?,
            connection: row.try_get("connection")?,
        });
    }
    Ok(out)
}

/// Our columns of a claimed row, then what delivery needs from the input tables.
const CLAIM_CONTEXT: &str = "cl.id, cl.kind, cl.subject_id, cl.stage, cl.event_date, cl.channel, \
    cl.subject, cl.body, cl.media_url, cl.recipient, cl.attempts, cl.expired_leases, \
    cl.contact_id, cl.connection, c.id AS c_id, c.name, c.phone, c.email, c.telegram_chat_id, c.channels, \
    (c.opted_out_at IS NOT NULL) AS opted_out, i.id AS i_id, i.number, i.amount, i.due_date, \
    i.status AS i_status, v.id AS v_id, v.plate_no, v.next_visit_date, v.last_visit_date, \
    sm.id AS s_id, sm.status AS s_status, sm.body AS s_body, sm.caption AS s_caption, \
    sm.media_url AS s_media_url, sm.channel AS s_channel, sm.scheduled_at AS s_scheduled_at, \
    sm.recurrence AS s_recurrence";

/// Each claimed row looks up its own contact and subject by primary key. `OFFSET 0` keeps the
/// planner from turning the lookups into hash joins, which read the whole of `invoices` and
/// `contacts` for every batch: a claim would then cost as much as the input tables are big.
const CLAIM_JOINS: &str = "LEFT JOIN LATERAL (SELECT * FROM contacts c \
        WHERE c.id = cl.contact_id OFFSET 0) c ON true \
    LEFT JOIN LATERAL (SELECT * FROM invoices i \
        WHERE cl.kind = 'dunning' AND i.id = cl.subject_id OFFSET 0) i ON true \
    LEFT JOIN LATERAL (SELECT * FROM vehicles v \
        WHERE cl.kind = 'maintenance' AND v.id = cl.subject_id OFFSET 0) v ON true \
    LEFT JOIN LATERAL (SELECT * FROM scheduled_messages sm \
        WHERE cl.kind = 'scheduled' AND sm.id = cl.subject_id OFFSET 0) sm ON true";

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
            connection: row.try_get("connection").map_err(e("connection"))?,
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
    let scheduled = row.try_get::<Option<i64>, _>("s_id").ok().flatten().map(|sid| {
        let at = |column| ("scheduled_messages", sid, column);
        ScheduledRow {
            id: sid,
            status: cell(row, "s_status", at("status")),
            body: cell(row, "s_body", at("body")),
            caption: cell(row, "s_caption", at("caption")),
            media_url: cell(row, "s_media_url", at("media_url")),
            channel: cell(row, "s_channel", at("channel")),
            scheduled_at: cell(row, "s_scheduled_at", at("scheduled_at")),
            recurrence: cell(row, "s_recurrence", at("recurrence")),
        }
    });
    Claimed {
        row: decoded.map_err(|e| (id, format!("outbox row {id} cannot be read: {e}"))),
        contact,
        invoice,
        vehicle,
        scheduled,
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
                 {CONTACT_CHANNELS} \
             FROM invoices i LEFT JOIN contacts c ON c.id = i.contact_id \
             WHERE i.status = 'unpaid' AND NOT i.is_test AND i.due_date BETWEEN $3 AND $4"
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
                 {CONTACT_CHANNELS} \
             FROM (SELECT id, contact_id, COALESCE(next_visit_date, \
                       (last_visit_date + interval '4 months')::date) AS visit FROM vehicles) v \
             LEFT JOIN contacts c ON c.id = v.contact_id \
             WHERE v.visit BETWEEN $2 AND $3"
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
             WHERE status IN ('pending', 'active', 'processing') \
               AND NOT (status = 'processing' AND next_run_at IS NULL) \
               AND COALESCE(next_run_at, scheduled_at) <= $1 AND id > $2 \
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
            // Compare-and-set on the run time: of two passes, only one moves the series on. The
            // row is `processing` until the delivery writes its outcome back.
            ids = sqlx::query_scalar(
                "UPDATE scheduled_messages s SET next_run_at = d.next, status = 'processing' \
                 FROM UNNEST($1::bigint[], $2::timestamptz[], $3::timestamptz[]) AS d(id, run_at, next) \
                 WHERE s.id = d.id AND s.status IN ('pending', 'active', 'processing') \
                   AND COALESCE(s.next_run_at, s.scheduled_at) = d.run_at \
                 RETURNING s.id",
            )
            .bind(&ids)
            .bind(advances.iter().map(|a| a.run_at).collect::<Vec<_>>())
            .bind(advances.iter().map(|a| a.next_run_at).collect::<Vec<_>>())
            .fetch_all(&mut *tx)
            .await?;
            // An occurrence still waiting when the next one comes was overtaken by it: it is
            // cancelled, never sent beside the new one.
            sqlx::query(
                "UPDATE messages SET status = 'cancelled', \
                     last_error = 'overtaken by a later occurrence of scheduled message ' \
                         || subject_id \
                 WHERE kind = 'scheduled' AND status = 'pending' AND subject_id = ANY($1)",
            )
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        }
        let won: Vec<&ScheduledAdvance> = advances.iter().filter(|a| ids.contains(&a.id)).collect();
        let source = "SELECT s.id AS subject_id, d.stage, NULL::date AS event_date, \
                 d.key AS dedup_key, s.contact_id, c.id AS contact_found, \
                 (c.opted_out_at IS NOT NULL) AS opted_out, \
                 COALESCE(NULLIF(btrim(s.channel, E' \\t\\r\\n'), ''), 'whatsapp') AS channels, \
                 'scheduled_messages ' || s.id || ' channel' AS spec_name, s.connection, \
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
        if !dry_run {
            // An occurrence that could not even be queued (no contact, no usable channel, opted
            // out) is its row's last delivery too.
            sqlx::query(
                "UPDATE scheduled_messages s SET error = m.last_error, \
                     status = CASE WHEN s.recurrence <> 'none' AND s.next_run_at IS NOT NULL \
                         THEN 'pending' ELSE 'failed' END \
                 FROM messages m \
                 WHERE m.kind = 'scheduled' AND m.subject_id = s.id AND m.fanout = 0 \
                   AND m.status IN ('failed', 'skipped') AND m.dedup_key = ANY($1)",
            )
            .bind(won.iter().map(|a| a.dedup_key.clone()).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        p.done();
        let mut out = generated(rows)?;
        out.found = advances.len() as u64;
        Ok(out)
    }

    async fn cancel_settled(&self, now: DateTime<Utc>, dry_run: bool) -> Result<Vec<GenRow>> {
        let _ = now;
        let sql = if dry_run { sql::SETTLED_PREVIEW } else { sql::SETTLED_CANCEL };
        let mut p = self.primary().await?;
        let rows = sqlx::query_as::<_, GenRow>(sql).fetch_all(p.conn()?).await?;
        p.done();
        Ok(rows)
    }

    async fn reserve_slots(
        &self,
        route: &Route,
        count: u32,
        interval_ns: i64,
        horizon: Duration,
    ) -> Result<Option<SlotGrant>> {
        let key = route.key();
        let mut c = self.pooled().await?;
        let mut tx = c.conn().begin().await?;
        sqlx::query(sql::ENSURE_ROUTE).bind(&key).execute(&mut *tx).await?;
        // The server's clock, in exact integer nanoseconds (extract returns numeric).
        let (next, now_ns): (i64, i64) = sqlx::query_as(
            "SELECT next_slot_ns, (extract(epoch FROM clock_timestamp()) * 1000000000)::bigint \
             FROM channel_state WHERE channel = $1 FOR UPDATE",
        )
        .bind(&key)
        .fetch_one(&mut *tx)
        .await?;
        let grant = super::slots(next, count, interval_ns, now_ns, horizon);
        if let Some(g) = grant {
            sqlx::query(sql::TAKE_SLOTS).bind(&key).bind(g.end_ns).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        c.done();
        Ok(grant)
    }

    async fn return_slots(&self, route: &Route, grant: SlotGrant, unused: u32) -> Result<()> {
        let mut c = self.pooled().await?;
        sql::return_slots::<sqlx::Postgres>(c.conn(), route, grant, unused).await?;
        c.done();
        Ok(())
    }

    async fn reserve_quota(
        &self,
        route: &Route,
        month: &str,
        quota: u64,
        want: u32,
    ) -> Result<u32> {
        let quota = i64::try_from(quota).unwrap_or(i64::MAX);
        let mut c = self.pooled().await?;
        let mut tx = c.conn().begin().await?;
        sqlx::query(sql::ENSURE_ROUTE).bind(route.key()).execute(&mut *tx).await?;
        let granted: i64 = sqlx::query_scalar(
            "WITH cur AS (SELECT CASE WHEN quota_month = $2 THEN quota_used ELSE 0 END AS used \
                 FROM channel_state WHERE channel = $1 FOR UPDATE), \
             g AS (SELECT LEAST($4::bigint, GREATEST($3::bigint - used, 0)) AS n, used FROM cur) \
             UPDATE channel_state SET quota_month = $2, quota_used = g.used + g.n FROM g \
             WHERE channel = $1 RETURNING g.n",
        )
        .bind(route.key())
        .bind(month)
        .bind(quota)
        .bind(i64::from(want))
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        c.done();
        Ok(granted.max(0) as u32)
    }

    async fn return_quota(&self, route: &Route, month: &str, unused: u32) -> Result<()> {
        if unused == 0 {
            return Ok(());
        }
        let mut c = self.pooled().await?;
        sql::return_quota::<sqlx::Postgres>(c.conn(), route, month, unused).await?;
        c.done();
        Ok(())
    }

    async fn due_by_connection(&self, now: DateTime<Utc>) -> Result<Vec<(Option<String>, u64)>> {
        let mut p = self.primary().await?;
        let rows = sql::due_by_connection::<sqlx::Postgres>(p.conn()?, now).await?;
        p.done();
        Ok(rows)
    }

    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Vec<Claimed>> {
        // The due conditions are checked again in the outer UPDATE: a row locked and released
        // by another pass between the two may no longer be due. Rows whose lease ran out on the
        // server's clock come first: they are the oldest work.
        let kinds = if request.only_scheduled { " AND kind = 'scheduled'" } else { "" };
        // The default route is `IS NULL`, never `IS NOT DISTINCT FROM $6`: the cached generic
        // plan cannot estimate the latter, takes it for one row, and then reads and sorts every
        // pending message instead of the head of `messages_pending`.
        let connection = if request.route.connection.is_some() {
            "connection = $6"
        } else {
            "connection IS NULL"
        };
        let sql = format!(
            "WITH expired AS MATERIALIZED ( \
                 SELECT id FROM messages \
                 WHERE channel = $1 AND {connection} \
                   AND status = 'sending' AND claimed_until <= now(){kinds} \
                 ORDER BY claimed_until LIMIT $3 FOR UPDATE SKIP LOCKED \
             ), waiting AS MATERIALIZED ( \
                 SELECT id FROM messages \
                 WHERE channel = $1 AND {connection} \
                   AND status = 'pending' AND next_attempt_at <= $2{kinds} \
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
        let mut query = sqlx::query(&sql)
            .bind(request.route.channel.as_str())
            .bind(request.now)
            .bind(request.limit)
            .bind(request.token)
            .bind(millis(request.lease));
        if let Some(connection) = request.route.connection.as_deref() {
            query = query.bind(connection);
        }
        let rows = query.fetch_all(p.conn()?).await?;
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
        // "Still ours" is written as a CASE so that no partial index on `status` can serve it:
        // the planner would otherwise hash-join the batch against every message in `sending`
        // (all that this and every other pass hold), where a primary-key lookup per result is
        // what a result write needs.
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
                 FROM v WHERE m.id = v.id \
                     AND CASE WHEN m.claimed_by = $1 THEN m.status END = 'sending' \
                 RETURNING m.id, m.kind, m.subject_id \
             ), sched AS ( \
                 UPDATE scheduled_messages s SET status = CASE WHEN s.status = 'cancelled' THEN 'cancelled' \
                     WHEN v.status = 'pending' THEN s.status \
                     WHEN s.recurrence <> 'none' AND s.next_run_at IS NOT NULL THEN 'pending' \
                     WHEN v.status = 'sent' OR s.status = 'sent' THEN 'sent' \
                     WHEN v.status = 'cancelled' THEN 'cancelled' ELSE 'failed' END, \
                     error = CASE WHEN v.status = 'sent' THEN NULL ELSE v.error END, \
                     message_id = CASE WHEN v.status = 'sent' THEN COALESCE(v.pid, s.message_id) \
                         ELSE s.message_id END, \
                     sent_at = CASE WHEN v.status = 'sent' THEN v.sent_at ELSE s.sent_at END \
                 FROM v JOIN upd ON upd.id = v.id \
                 WHERE upd.kind = 'scheduled' AND s.id = upd.subject_id AND v.label IS NOT NULL \
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
        route: &Route,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut c = self.pooled().await?;
        sql::set_channel_down::<sqlx::Postgres>(c.conn(), route, reason, now).await?;
        c.done();
        Ok(())
    }

    async fn preview_due(
        &self,
        channel: ChannelKind,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<GenRow>> {
        let mut p = self.primary().await?;
        let rows = sqlx::query_as::<_, GenRow>(&sql::preview_due::<sqlx::Postgres>())
            .bind(now)
            .bind(channel.as_str())
            .bind(limit)
            .fetch_all(p.conn()?)
            .await?;
        p.done();
        Ok(rows)
    }

    async fn context_of(&self, rows: &[GenRow]) -> Result<Vec<Claimed>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "WITH t AS (SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], \
                 $4::bigint[]) AS t(id, kind, subject_id, contact_id)), \
             cl AS (SELECT t.id, t.kind, t.subject_id, NULL::text AS stage, \
                 NULL::date AS event_date, 'whatsapp'::text AS channel, NULL::text AS subject, \
                 NULL::text AS body, NULL::text AS media_url, NULL::text AS recipient, \
                 0 AS attempts, 0 AS expired_leases, t.contact_id, NULL::text AS connection \
                 FROM t) \
             SELECT {CLAIM_CONTEXT} FROM cl {CLAIM_JOINS} ORDER BY cl.id"
        );
        let index: Vec<i64> = (0..rows.len()).map(|i| i64::try_from(i).unwrap_or(0)).collect();
        let mut p = self.primary().await?;
        let found = sqlx::query(&sql)
            .bind(&index)
            .bind(rows.iter().map(|r| r.kind.clone()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.subject_id).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.contact_id).collect::<Vec<_>>())
            .fetch_all(p.conn()?)
            .await?;
        p.done();
        let mut out: Vec<Claimed> =
            rows.iter().enumerate().map(|(i, r)| super::candidate(i, r)).collect();
        for row in &found {
            let context = claimed(row);
            let Some(c) = usize::try_from(context.id()).ok().and_then(|i| out.get_mut(i)) else {
                continue;
            };
            c.contact = context.contact;
            c.invoice = context.invoice;
            c.vehicle = context.vehicle;
            c.scheduled = context.scheduled;
        }
        Ok(out)
    }

    async fn count_due(&self, route: &Route, now: DateTime<Utc>) -> Result<u64> {
        let mut p = self.primary().await?;
        let n = sql::count_due::<sqlx::Postgres>(p.conn()?, route, now).await?;
        p.done();
        Ok(n)
    }

    async fn status(&self, now: DateTime<Utc>, failures: i64) -> Result<StatusData> {
        let mut p = self.primary().await?;
        let sql::StatusRows { counts, failures, down, due } =
            sql::status_rows::<sqlx::Postgres>(p.conn()?, failures, now).await?;
        let slots = sqlx::query_as::<_, (String, i64, Option<String>, i64)>(
            "SELECT channel, GREATEST(next_slot_ns \
                 - (extract(epoch FROM clock_timestamp()) * 1000000000)::bigint, 0), \
                 quota_month, quota_used \
             FROM channel_state ORDER BY channel",
        )
        .fetch_all(p.conn()?)
        .await?
        .into_iter()
        .map(|(channel, wait, quota_month, quota_used)| SlotState {
            channel,
            next_free_in: Duration::from_nanos(wait.max(0) as u64),
            quota_month,
            quota_used,
        })
        .collect();
        p.done();
        Ok(StatusData { counts, failures, down, due, slots, bad_inputs: Vec::new() })
    }

    async fn insert_messages(&self, rows: &[NewMessage], now: DateTime<Utc>) -> Result<Vec<i64>> {
        let mut p = self.primary().await?;
        let ids = sql::insert_messages::<sqlx::Postgres>(p.conn()?, rows, now).await?;
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
        let contact =
            sql::test_contact::<sqlx::Postgres>(&mut tx, name, email, phone, dry_run).await?;
        tx.commit().await?;
        p.done();
        Ok(contact)
    }

    async fn create_test_invoice(
        &self,
        contact_id: i64,
        number: &str,
        amount: i64,
        due: NaiveDate,
    ) -> Result<i64> {
        let mut p = self.primary().await?;
        let id =
            sql::create_test_invoice::<sqlx::Postgres>(p.conn()?, contact_id, number, amount, due)
                .await?;
        p.done();
        Ok(id)
    }

    async fn seed(&self, demo: &DemoData, reset: bool) -> Result<SeedCounts> {
        let mut p = self.primary().await?;
        let mut tx = p.conn()?.begin().await?;
        let counts = sql::seed::<sqlx::Postgres>(&mut tx, demo, reset).await?;
        tx.commit().await?;
        p.done();
        Ok(counts)
    }

    async fn contact_names(&self, ids: &[i64]) -> Result<Vec<(i64, String)>> {
        let mut p = self.primary().await?;
        let rows: Vec<(i64, String)> =
            sqlx::query_as("SELECT id, name FROM contacts WHERE id = ANY($1) ORDER BY id")
                .bind(ids)
                .fetch_all(p.conn()?)
                .await?;
        p.done();
        Ok(rows)
    }

    async fn add_scheduled(&self, rows: &[NewScheduled]) -> Result<Vec<i64>> {
        let mut p = self.primary().await?;
        let mut tx = p.conn()?.begin().await?;
        let ids = sql::add_scheduled::<sqlx::Postgres>(&mut tx, rows).await?;
        tx.commit().await?;
        p.done();
        Ok(ids)
    }

    async fn list_scheduled(
        &self,
        id: Option<i64>,
        contact: Option<i64>,
        created_by: Option<&str>,
    ) -> Result<Vec<ScheduledListing>> {
        let mut p = self.primary().await?;
        let rows = sqlx::query(sql::LIST_SCHEDULED)
            .bind(id)
            .bind(contact)
            .bind(created_by)
            .fetch_all(p.conn()?)
            .await?;
        p.done();
        rows.iter()
            .map(|r| {
                let next_run_at: Option<DateTime<Utc>> = r.try_get("next_run")?;
                let sent_at: Option<DateTime<Utc>> = r.try_get("sent_at")?;
                Ok(ScheduledListing {
                    id: r.try_get("id")?,
                    contact_id: r.try_get("contact_id")?,
                    contact_name: r.try_get("contact_name")?,
                    channel: r.try_get("channel")?,
                    connection: r.try_get("connection")?,
                    body: r.try_get("body")?,
                    media_url: r.try_get("media_url")?,
                    caption: r.try_get("caption")?,
                    recurrence: r.try_get("recurrence")?,
                    status: r.try_get("status")?,
                    next_run: next_run_at.map(|t| t.to_rfc3339()),
                    next_run_at,
                    error: r.try_get("error")?,
                    message_id: r.try_get("message_id")?,
                    sent_at: sent_at.map(|t| t.to_rfc3339()),
                    created_by: r.try_get("created_by")?,
                })
            })
            .collect()
    }

    async fn edit_scheduled(&self, id: i64, edit: &ScheduledEdit) -> Result<()> {
        let mut p = self.primary().await?;
        let mut tx = p.conn()?.begin().await?;
        sql::edit_scheduled::<sqlx::Postgres>(&mut tx, id, edit).await?;
        tx.commit().await?;
        p.done();
        Ok(())
    }

    async fn cancel_scheduled(&self, id: i64, by: Option<&str>) -> Result<u64> {
        let mut p = self.primary().await?;
        let mut tx = p.conn()?.begin().await?;
        let n = sql::cancel_scheduled::<sqlx::Postgres>(&mut tx, id, by).await?;
        tx.commit().await?;
        p.done();
        Ok(n)
    }

    async fn import_lookup(
        &self,
        table: ImportTable,
        refs: &[String],
        ids: &[i64],
    ) -> Result<ImportLookup> {
        let t = table.table();
        let scheduled =
            if table == ImportTable::Scheduled { "scheduled_at" } else { "NULL::timestamptz" };
        let mut p = self.primary().await?;
        let mut lookup = ImportLookup::default();
        if !refs.is_empty() {
            let rows: Vec<(i64, String, Option<DateTime<Utc>>)> = sqlx::query_as(&format!(
                "SELECT id, ref, {scheduled} FROM {t} WHERE ref = ANY($1)"
            ))
            .bind(refs)
            .fetch_all(p.conn()?)
            .await?;
            for (id, r, scheduled_at) in rows {
                lookup.by_ref.insert(r, ImportedRow { id, scheduled_at });
            }
        }
        if !ids.is_empty() {
            let rows: Vec<(i64, Option<String>)> =
                sqlx::query_as(&format!("SELECT id, ref FROM {t} WHERE id = ANY($1)"))
                    .bind(ids)
                    .fetch_all(p.conn()?)
                    .await?;
            lookup.by_id.extend(rows);
        }
        p.done();
        Ok(lookup)
    }

    async fn import(
        &self,
        table: ImportTable,
        batches: &mut ImportSource<'_>,
    ) -> Result<ImportCounts> {
        let t = table.table();
        let mut p = self.primary().await?;
        let mut tx = p.conn()?.begin().await?;
        let mut counts = ImportCounts::default();
        let mut explicit_ids = false;
        for batch in batches {
            let batch = batch.map_err(StoreError::Other)?;
            if batch.is_empty() {
                continue;
            }
            explicit_ids |= batch.ids.is_some();
            let before: std::collections::HashSet<String> =
                sqlx::query_scalar(&format!("SELECT ref FROM {t} WHERE ref = ANY($1)"))
                    .bind(&batch.refs)
                    .fetch_all(&mut *tx)
                    .await?
                    .into_iter()
                    .collect();
            // One array per column, unnested into rows: one statement per batch.
            let mut arrays = vec!["$1::text[]".to_string()];
            let mut names = vec!["ref"];
            let mut values = vec!["u.ref"];
            if batch.ids.is_some() {
                arrays.push(format!("${}::bigint[]", arrays.len() + 1));
                names.push("id");
                values.push("u.id");
            }
            if batch.contact_refs.is_some() {
                arrays.push(format!("${}::text[]", arrays.len() + 1));
                names.push("contact_ref");
                values.push("c.id");
            }
            let mut selected: Vec<String> = values.iter().map(ToString::to_string).collect();
            for column in &batch.columns {
                let sql_type = match column.values {
                    ImportValues::Text(_) => "text",
                    ImportValues::Int(_) => "bigint",
                    ImportValues::Date(_) => "date",
                    ImportValues::Instant(_) => "timestamptz",
                };
                arrays.push(format!("${}::{sql_type}[]", arrays.len() + 1));
                names.push(column.name);
                selected.push(format!("u.{}", column.name));
            }
            let join = if batch.contact_refs.is_some() {
                "JOIN contacts c ON c.ref = u.contact_ref"
            } else {
                ""
            };
            let sql = format!(
                "INSERT INTO {t} ({}) SELECT {} FROM UNNEST({}) AS u({}) {join} {} RETURNING ref",
                super::import_columns(&batch).join(", "),
                selected.join(", "),
                arrays.join(", "),
                names.join(", "),
                super::import_conflict(table, &batch)
            );
            let mut query = sqlx::query_scalar::<_, String>(&sql).bind(&batch.refs);
            if let Some(ids) = &batch.ids {
                query = query.bind(ids);
            }
            if let Some(contacts) = &batch.contact_refs {
                query = query.bind(contacts);
            }
            for column in &batch.columns {
                query = match &column.values {
                    ImportValues::Text(v) => query.bind(v),
                    ImportValues::Int(v) => query.bind(v),
                    ImportValues::Date(v) => query.bind(v),
                    ImportValues::Instant(v) => query.bind(v),
                };
            }
            let returned: std::collections::HashSet<String> =
                query.fetch_all(&mut *tx).await?.into_iter().collect();
            counts += super::tally_import(&batch.refs, &before, &returned)?;
        }
        if explicit_ids {
            // Rows written with explicit ids do not move the identity sequence: without this,
            // an app's next insert without an id would be given one of them and fail. The
            // sequence only ever moves forward, so ids of deleted rows are not handed out again.
            sqlx::query(&format!(
                "SELECT setval(s.seq, GREATEST(m.top, \
                     COALESCE(pg_sequence_last_value(s.seq::regclass), 0))) \
                 FROM (SELECT pg_get_serial_sequence('{t}', 'id') AS seq) s, \
                     (SELECT max(id) AS top FROM {t}) m \
                 WHERE s.seq IS NOT NULL AND m.top IS NOT NULL"
            ))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        p.done();
        Ok(counts)
    }

    async fn has_open_messages(&self) -> Result<bool> {
        let mut p = self.primary().await?;
        let n: i64 = sqlx::query_scalar(OPEN_MESSAGES).fetch_one(p.conn()?).await?;
        p.done();
        Ok(n > 0)
    }

    async fn begin_pass(&self, start: &PassStart) -> Result<i64> {
        let mut p = self.primary().await?;
        let id = sql::begin_pass::<sqlx::Postgres>(p.conn()?, start).await?;
        p.done();
        Ok(id)
    }

    async fn finish_pass(&self, id: i64, counts: &PassCounts, error: Option<&str>) -> Result<()> {
        let mut p = self.primary().await?;
        sql::finish_pass::<sqlx::Postgres>(p.conn()?, id, counts, error).await?;
        p.done();
        Ok(())
    }

    async fn pass_history(&self) -> Result<PassHistory> {
        let mut p = self.primary().await?;
        let real_now: DateTime<Utc> =
            sqlx::query_scalar("SELECT clock_timestamp()").fetch_one(p.conn()?).await?;
        let mut out = PassHistory { real_now, last: None, last_ok: None };
        for (slot, filter) in [(&mut out.last, ""), (&mut out.last_ok, PASS_OK)] {
            let row = sqlx::query(&sql::latest_pass(filter)).fetch_optional(p.conn()?).await?;
            *slot = row.map(|r| pass_record(&r)).transpose()?;
        }
        p.done();
        Ok(out)
    }

    async fn retry_failed(&self, select: &RetrySelect, now: DateTime<Utc>) -> Result<Retried> {
        let mut p = self.primary().await?;
        let mut tx = p.conn()?.begin().await?;
        let retried = sql::retry_failed::<sqlx::Postgres>(&mut tx, select, now).await?;
        tx.commit().await?;
        p.done();
        Ok(retried)
    }

    async fn prune(&self, cut: &PruneCut, dry_run: bool) -> Result<Pruned> {
        let keys = prune_keys(
            "split_part(m.dedup_key, ':', 3)::bigint",
            "extract(epoch FROM COALESCE(s.next_run_at, s.scheduled_at))",
        );
        let mut p = self.primary().await?;
        let mut tx = p.conn()?.begin().await?;
        let mut deleted = [0u64; 2];
        for (n, statement) in deleted.iter_mut().zip(prune_deletes(&keys)) {
            *n = sqlx::query(&statement)
                .bind(cut.before)
                .bind(cut.dunning_due_until)
                .bind(cut.visit_before)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        let passes =
            sqlx::query("DELETE FROM passes WHERE started_at < now() - make_interval(days => $1)")
                .bind(i32::try_from(cut.passes_days).unwrap_or(i32::MAX))
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if dry_run {
            tx.rollback().await?;
        } else {
            tx.commit().await?;
        }
        p.done();
        Ok(Pruned { messages: deleted[1], attempts: deleted[0], passes })
    }
}
