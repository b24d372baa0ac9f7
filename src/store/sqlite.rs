//! SQLite, the embedded default: WAL with a busy timeout, claims as one `UPDATE … RETURNING`
//! statement, multi-row writes as `BEGIN IMMEDIATE` transactions, and migrations behind a file
//! lock so that two processes starting on a new file do not race.
//!
//! SQLite stores whatever an app writes, whatever the column's declared type, so every value
//! read from an input table is decoded on its own ([`Raw`]): a bad one fails the message that
//! needs it, with the table, row, column and value in the reason, and never the claim.
//!
//! A write that fails (a full disk, a lock held past the busy timeout) discards its connection
//! instead of returning it to the pool half-open, so the next write starts clean.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Months, NaiveDate, SecondsFormat, Utc};
use chrono_tz::Tz;
use serde_json::json;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Row, Sqlite, SqliteConnection, TypeInfo as _, ValueRef as _};

use super::sql::{self, prune_deletes, prune_keys, Dialect, OPEN_MESSAGES, PASS_OK};
use super::{
    pass_record, PassCounts, PassHistory, PassStart, PruneCut, Pruned, Retried, RetrySelect,
};
use super::{
    BadValue, Cell, ClaimRequest, Claimed, ClaimedRow, ContactRow, DemoData, DueScheduled, GenRow,
    Generated, ImportBatch, ImportCounts, ImportLookup, ImportSource, ImportTable, ImportValues,
    ImportedRow, InputScan, InvoiceRow, NewMessage, NewScheduled, Recorded, Result,
    ScheduledAdvance, ScheduledEdit, ScheduledListing, ScheduledRow, SeedCounts, SlotGrant,
    SlotState, StatusData, Store, StoreError, TestContact, VehicleRow, Written,
};
use crate::domain::channel::{ChannelKind, Route};
use crate::domain::dates;
use crate::domain::outbox::{Kind, Outcome};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// How long a statement waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

pub struct SqliteStore {
    pool: SqlitePool,
    /// The database file, for the migration lock; `None` for an in-memory database.
    path: Option<PathBuf>,
    /// The zone in which text dates are read.
    tz: Tz,
}

/// Outbox timestamps: fixed-width UTC text, so that text order is time order. Years past 9999
/// would need a fifth digit and sort before 9999; they are clamped to its last instant.
fn ts(at: DateTime<Utc>) -> String {
    let latest = NaiveDate::from_ymd_opt(9999, 12, 31)
        .and_then(|d| d.and_hms_milli_opt(23, 59, 59, 999))
        .map(|t| t.and_utc());
    let earliest = NaiveDate::from_ymd_opt(0, 1, 1).map(|d| d.and_time(chrono::NaiveTime::MIN));
    let at = match (latest, earliest) {
        (Some(l), _) if at > l => l,
        (_, Some(e)) if at < e.and_utc() => e.and_utc(),
        _ => at,
    };
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl Dialect for Sqlite {
    type Instant = String;

    fn instant(at: DateTime<Utc>) -> String {
        ts(at)
    }

    fn rows_affected(done: &sqlx::sqlite::SqliteQueryResult) -> u64 {
        done.rows_affected()
    }

    const FOR_UPDATE: &'static str = "";

    /// The fixed-width text [`ts`] writes, from SQLite's own reading of this host's clock.
    const REAL_NOW: &'static str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

    type Ids = String;
    type Keys = String;

    fn ids(ids: &[i64]) -> String {
        serde_json::to_string(ids).unwrap_or_default()
    }

    fn keys(keys: &[&str]) -> String {
        serde_json::to_string(keys).unwrap_or_default()
    }

    fn one_of(expr: &str, param: &str) -> String {
        format!("{expr} IN (SELECT value FROM json_each({param}))")
    }
}

/// The real clock of this store (SQLite lives on one host): now, and now plus `d`.
fn real(d: Duration) -> String {
    let now = crate::clock::real_now();
    ts(now.checked_add_signed(chrono::Duration::from_std(d).unwrap_or_default()).unwrap_or(now))
}

fn real_ns() -> i64 {
    crate::clock::real_now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// Whether a date column's value must be read in Rust. SQL reads a value only when `date()`
/// agrees with Rust on it: text that starts with a real calendar date (`date(…, '+0 days')`
/// normalizes `2025-02-30` to March, and reads a Julian day number) followed by nothing but a
/// naive time. Anything else, an offset in any spelling (`+07:00`, ` +0700`, `Z`, ` Z`) above
/// all, which `date()` reads as its UTC date, is read in Rust as a local date, or reported.
/// The odd-date partial indexes of the migrations repeat these expressions exactly.
fn odd_date(col: &str) -> String {
    format!("({col} IS NOT NULL AND {})", odd_date_value(col))
}

/// [`odd_date`] of a `NOT NULL` column: SQLite drops `IS NOT NULL` there as always true, and a
/// query with the term would then not match an index whose `WHERE` keeps it.
fn odd_date_value(col: &str) -> String {
    format!(
        "(typeof({col}) <> 'text' \
         OR date({col}, '+0 days') IS NOT substr({col}, 1, 10) \
         OR substr({col}, 11) GLOB '*[^0-9:. Tt]*')"
    )
}

/// The unpaid invoices whose due date SQL cannot read (`invoices_odd_due`).
fn odd_invoices_sql() -> String {
    format!(
        "SELECT id, due_date FROM invoices WHERE status = 'unpaid' AND {} ORDER BY id",
        odd_date_value("due_date")
    )
}

/// The vehicles whose visit date SQL cannot read: one branch on each of `vehicles_odd_next` and
/// `vehicles_odd_last` (SQLite reads the whole table for the two joined by `OR`).
fn odd_vehicles_sql() -> String {
    format!(
        "SELECT id, next_visit_date, last_visit_date FROM vehicles WHERE {} \
         UNION ALL \
         SELECT id, next_visit_date, last_visit_date FROM vehicles \
         WHERE next_visit_date IS NULL AND {} ORDER BY id",
        odd_date("next_visit_date"),
        odd_date("last_visit_date")
    )
}

/// Whether a timestamp column's value must be checked in Rust: not text, not a time
/// `unixepoch()` reads, or not starting with a date (`unixepoch()` also reads Julian day
/// numbers such as `2460996.5`, which no rule means).
fn odd_instant(col: &str) -> String {
    format!(
        "({col} IS NOT NULL AND (typeof({col}) <> 'text' OR unixepoch({col}) IS NULL \
         OR {col} NOT GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*'))"
    )
}

/// A value as SQLite holds it, whatever the column's declared type.
#[derive(Debug, Clone, PartialEq)]
enum Raw {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    /// A blob, or text that is not valid UTF-8.
    Bytes(Vec<u8>),
}

impl Raw {
    fn read(row: &SqliteRow, col: &str) -> Raw {
        let Ok(value) = row.try_get_raw(col) else { return Raw::Null };
        if value.is_null() {
            return Raw::Null;
        }
        let type_name = value.type_info().name().to_string();
        match type_name.as_str() {
            "INTEGER" => row.try_get_unchecked::<i64, _>(col).map_or(Raw::Null, Raw::Integer),
            "REAL" => row.try_get_unchecked::<f64, _>(col).map_or(Raw::Null, Raw::Real),
            _ => match row.try_get_unchecked::<Vec<u8>, _>(col) {
                Ok(bytes) if type_name == "TEXT" => match String::from_utf8(bytes) {
                    Ok(text) => Raw::Text(text),
                    Err(e) => Raw::Bytes(e.into_bytes()),
                },
                Ok(bytes) => match String::from_utf8(bytes) {
                    // A blob holding UTF-8 is text an app stored through the wrong API.
                    Ok(text) if !text.contains('\0') => Raw::Text(text),
                    Ok(text) => Raw::Bytes(text.into_bytes()),
                    Err(e) => Raw::Bytes(e.into_bytes()),
                },
                Err(_) => Raw::Null,
            },
        }
    }

    /// The value as an operator would write it.
    fn shown(&self) -> String {
        match self {
            Raw::Null => "NULL".into(),
            Raw::Integer(n) => n.to_string(),
            Raw::Real(x) => x.to_string(),
            Raw::Text(t) => t.clone(),
            Raw::Bytes(b) => {
                let hex = b.iter().take(16).fold(String::new(), |mut out, x| {
                    let _ = write!(out, "{x:02x}");
                    out
                });
                format!("x'{hex}{}' ({} bytes)", if b.len() > 16 { "…" } else { "" }, b.len())
            }
        }
    }

    /// Text columns: numbers are taken as their digits (a phone or chat id stored as a number).
    fn text(&self, at: (&'static str, i64, &'static str)) -> Cell<String> {
        match self {
            Raw::Null => Ok(None),
            Raw::Text(t) => Ok(Some(t.clone())),
            Raw::Integer(n) => Ok(Some(n.to_string())),
            Raw::Real(x) if x.fract() == 0.0 && x.abs() < 1e15 => Ok(Some(format!("{x:.0}"))),
            other => Err(BadValue::new(
                at.0,
                at.1,
                at.2,
                &other.shown(),
                format!("{} is not text", other.shown()),
            )),
        }
    }

    /// Whole-number columns (rupiah amounts).
    fn integer(&self, at: (&'static str, i64, &'static str)) -> Cell<i64> {
        let bad = |what: &str| {
            Err(BadValue::new(
                at.0,
                at.1,
                at.2,
                what,
                format!("'{}' is not a whole number", super::shown(what)),
            ))
        };
        match self {
            Raw::Null => Ok(None),
            Raw::Integer(n) => Ok(Some(*n)),
            Raw::Real(x) if x.fract() == 0.0 && x.abs() < 9e15 => Ok(Some(*x as i64)),
            Raw::Text(t) => t.trim().parse::<i64>().map(Some).or_else(|_| bad(t)),
            other => bad(&other.shown()),
        }
    }

    /// Date columns, read as local dates in `tz` (see [`dates::local_date`]).
    fn date(&self, tz: Tz, at: (&'static str, i64, &'static str)) -> Cell<NaiveDate> {
        match self {
            Raw::Null => Ok(None),
            Raw::Text(t) => dates::local_date(t, tz)
                .map(Some)
                .map_err(|e| BadValue::new(at.0, at.1, at.2, t, e.to_string())),
            other => Err(BadValue::new(
                at.0,
                at.1,
                at.2,
                &other.shown(),
                format!("{} is not a date (YYYY-MM-DD, or an ISO-8601 timestamp)", other.shown()),
            )),
        }
    }
}

/// A pooled connection for a write: discarded unless the write completes, so that a failed
/// statement or commit (a full disk, a lock held too long) cannot leave it half-open in the pool.
struct Writer {
    conn: PoolConnection<Sqlite>,
    open: bool,
}

impl Writer {
    async fn begin(pool: &SqlitePool) -> Result<Self> {
        let mut w = Self { conn: pool.acquire().await?, open: true };
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *w.conn).await?;
        Ok(w)
    }

    fn conn(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }

    async fn commit(mut self) -> Result<()> {
        sqlx::query("COMMIT").execute(&mut *self.conn).await?;
        self.open = false;
        Ok(())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if self.open {
            // Closing the connection rolls its transaction back.
            self.conn.close_on_drop();
        }
    }
}

/// A pooled connection for one statement outside a transaction, discarded unless the statement
/// completes.
struct Single {
    conn: PoolConnection<Sqlite>,
    ok: bool,
}

impl Single {
    async fn acquire(pool: &SqlitePool) -> Result<Self> {
        Ok(Self { conn: pool.acquire().await?, ok: false })
    }

    fn conn(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }

    fn done(mut self) {
        self.ok = true;
    }
}

impl Drop for Single {
    fn drop(&mut self) {
        if !self.ok {
            self.conn.close_on_drop();
        }
    }
}

/// `SQLITE_BUSY` or `SQLITE_LOCKED`, in any of their extended forms: another connection holds what
/// this one needs, and trying again later may succeed.
fn is_busy(e: &sqlx::Error) -> bool {
    let sqlx::Error::Database(e) = e else { return false };
    e.code().and_then(|c| c.parse::<i32>().ok()).is_some_and(|c| matches!(c & 0xff, 5 | 6))
}

impl SqliteStore {
    pub async fn connect(url: &str, tz: Tz) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            // Long enough for other passes' short writes; past it a held lock fails the write,
            // and the pass halts with its results in the journal rather than waiting forever.
            .busy_timeout(BUSY_TIMEOUT)
            .log_statements(tracing::log::LevelFilter::Trace)
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(5));
        let filename = options.get_filename().to_path_buf();
        let path = (!filename.as_os_str().is_empty() && filename.as_os_str() != ":memory:")
            .then_some(filename);
        let began = std::time::Instant::now();
        let mut pause = Duration::from_millis(20);
        let pool = loop {
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(options.clone())
                .await;
            match pool {
                Ok(pool) => break pool,
                // Processes that open a new file at once race to switch it to WAL, and SQLite
                // can answer a loser "database is locked" at once, without waiting out the busy
                // timeout: its read of the header cannot become the write the switch needs while
                // another holds the file. By the next try the winner has switched it.
                Err(e) if is_busy(&e) && began.elapsed() < BUSY_TIMEOUT => {
                    tracing::debug!(error = %e, "the database was busy while opening; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                Err(e) => return Err(e.into()),
            }
        };
        Ok(Self { pool, path, tz })
    }

    /// The pool, for tests and benchmarks that prepare data directly.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// What delivery needs of messages this pass has just claimed, each row decoded on its own.
    async fn claimed_context(&self, rows: Vec<SqliteRow>, token: &str) -> Result<Vec<Claimed>> {
        let mut claimed: Vec<Claimed> = rows.iter().map(own_columns).collect();
        claimed.sort_by_key(Claimed::id);
        let ids: Vec<i64> = claimed.iter().map(Claimed::id).collect();
        if ids.is_empty() {
            return Ok(claimed);
        }
        let context = sqlx::query(&context_sql(
            "messages cl",
            "cl.id IN (SELECT value FROM json_each(?1)) AND cl.claimed_by = ?2",
        ))
        .bind(serde_json::to_string(&ids).unwrap_or_default())
        .bind(token)
        .fetch_all(&self.pool)
        .await?;
        for row in &context {
            let Ok(mid) = row.try_get::<i64, _>("mid") else { continue };
            let Some(c) = claimed.iter_mut().find(|c| c.id() == mid) else { continue };
            self.fill_context(c, row);
        }
        Ok(claimed)
    }

    /// What delivery would need of rows a dry run would create, to render them.
    async fn candidates_context(&self, rows: &[GenRow]) -> Result<Vec<Claimed>> {
        let mut claimed: Vec<Claimed> =
            rows.iter().enumerate().map(|(i, r)| super::candidate(i, r)).collect();
        if rows.is_empty() {
            return Ok(claimed);
        }
        let list: Vec<_> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                json!({"id": i, "kind": r.kind, "subject_id": r.subject_id,
                       "contact_id": r.contact_id})
            })
            .collect();
        let context = sqlx::query(&context_sql(
            "(SELECT j.value ->> 'id' AS id, j.value ->> 'kind' AS kind, \
                  j.value ->> 'subject_id' AS subject_id, j.value ->> 'contact_id' AS contact_id \
              FROM json_each(?1) j) cl",
            "true",
        ))
        .bind(serde_json::Value::Array(list).to_string())
        .fetch_all(&self.pool)
        .await?;
        for row in &context {
            let Ok(index) = row.try_get::<i64, _>("mid") else { continue };
            let Some(c) = usize::try_from(index).ok().and_then(|i| claimed.get_mut(i)) else {
                continue;
            };
            self.fill_context(c, row);
        }
        Ok(claimed)
    }

    fn fill_context(&self, c: &mut Claimed, row: &SqliteRow) {
        if let Raw::Integer(id) = Raw::read(row, "c_id") {
            let at = |column| ("contacts", id, column);
            c.contact = Some(ContactRow {
                id,
                name: Raw::read(row, "name").text(at("name")),
                phone: Raw::read(row, "phone").text(at("phone")),
                email: Raw::read(row, "email").text(at("email")),
                telegram_chat_id: Raw::read(row, "telegram_chat_id").text(at("telegram_chat_id")),
                channels: Raw::read(row, "channels").text(at("channels")),
                opted_out: matches!(Raw::read(row, "opted_out"), Raw::Integer(1)),
            });
        }
        if let Raw::Integer(id) = Raw::read(row, "i_id") {
            let at = |column| ("invoices", id, column);
            c.invoice = Some(InvoiceRow {
                id,
                number: Raw::read(row, "number").text(at("number")),
                amount: Raw::read(row, "amount").integer(at("amount")),
                due_date: Raw::read(row, "due_date").date(self.tz, at("due_date")),
                status: Raw::read(row, "i_status").text(at("status")),
            });
        }
        if let Raw::Integer(id) = Raw::read(row, "s_id") {
            let at = |column| ("scheduled_messages", id, column);
            let scheduled_at = match Raw::read(row, "s_scheduled_at").text(at("scheduled_at")) {
                Ok(Some(t)) => dates::instant(&t, self.tz)
                    .map(Some)
                    .map_err(|e| BadValue::new(at("").0, id, "scheduled_at", &t, e.to_string())),
                other => other.map(|_| None),
            };
            c.scheduled = Some(ScheduledRow {
                id,
                status: Raw::read(row, "s_status").text(at("status")),
                body: Raw::read(row, "s_body").text(at("body")),
                caption: Raw::read(row, "s_caption").text(at("caption")),
                media_url: Raw::read(row, "s_media_url").text(at("media_url")),
                channel: Raw::read(row, "s_channel").text(at("channel")),
                scheduled_at,
                recurrence: Raw::read(row, "s_recurrence").text(at("recurrence")),
            });
        }
        if let Raw::Integer(id) = Raw::read(row, "v_id") {
            let at = |column| ("vehicles", id, column);
            c.vehicle = Some(VehicleRow {
                id,
                plate_no: Raw::read(row, "plate_no").text(at("plate_no")),
                visit_date: visit_date(
                    &Raw::read(row, "next_visit_date"),
                    &Raw::read(row, "last_visit_date"),
                    self.tz,
                    id,
                ),
            });
        }
    }
}

/// What delivery reads of a message's contact and subject; `from` names the messages as `cl`.
fn context_sql(from: &str, filter: &str) -> String {
    format!(
        "SELECT cl.id AS mid, c.id AS c_id, c.name, c.phone, c.email, c.telegram_chat_id, \
             c.channels, (c.opted_out_at IS NOT NULL) AS opted_out, \
             i.id AS i_id, i.number, i.amount, i.due_date, i.status AS i_status, \
             v.id AS v_id, v.plate_no, v.next_visit_date, v.last_visit_date, \
             sm.id AS s_id, sm.status AS s_status, sm.body AS s_body, sm.caption AS s_caption, \
             sm.media_url AS s_media_url, sm.channel AS s_channel, \
             sm.scheduled_at AS s_scheduled_at, sm.recurrence AS s_recurrence \
         FROM {from} \
         LEFT JOIN contacts c ON c.id = cl.contact_id \
         LEFT JOIN invoices i ON cl.kind = 'dunning' AND i.id = cl.subject_id \
         LEFT JOIN vehicles v ON cl.kind = 'maintenance' AND v.id = cl.subject_id \
         LEFT JOIN scheduled_messages sm ON cl.kind = 'scheduled' AND sm.id = cl.subject_id \
         WHERE {filter}"
    )
}

/// A vehicle's next visit: `next_visit_date`, or four months after `last_visit_date` (clamped
/// to the month's end, as PostgreSQL's `+ interval '4 months'` does).
fn visit_date(next: &Raw, last: &Raw, tz: Tz, id: i64) -> Cell<NaiveDate> {
    match next.date(tz, ("vehicles", id, "next_visit_date"))? {
        Some(d) => Ok(Some(d)),
        None => Ok(last
            .date(tz, ("vehicles", id, "last_visit_date"))?
            .and_then(|d| d.checked_add_months(Months::new(4)))),
    }
}

/// The columns a claim returns: ours, each checked, so one bad row cannot fail the batch.
fn own_columns(row: &SqliteRow) -> Claimed {
    let id = row.try_get::<i64, _>("id").unwrap_or(0);
    let decoded = (|| -> std::result::Result<ClaimedRow, String> {
        let text =
            |col: &str| row.try_get::<Option<String>, _>(col).map_err(|e| format!("{col}: {e}"));
        let kind: Kind = row.try_get::<String, _>("kind").map_err(|e| e.to_string())?.parse()?;
        let subject_id: Option<i64> =
            row.try_get("subject_id").map_err(|e| format!("subject_id: {e}"))?;
        // A scheduled message's text and media were copied from its row when it was queued:
        // a value there that is not text is named where the app wrote it.
        let copied = |col: &'static str| {
            let at = match (kind, subject_id) {
                (Kind::Scheduled, Some(subject)) => ("scheduled_messages", subject, col),
                _ => ("messages", id, col),
            };
            Raw::read(row, col).text(at).map_err(|bad| bad.to_string())
        };
        Ok(ClaimedRow {
            id,
            kind,
            subject_id,
            stage: text("stage")?,
            event_date: row
                .try_get::<Option<NaiveDate>, _>("event_date")
                .map_err(|e| format!("event_date: {e}"))?,
            channel: row.try_get::<String, _>("channel").map_err(|e| e.to_string())?.parse()?,
            subject: text("subject")?,
            body: copied("body")?,
            media_url: copied("media_url")?,
            recipient: text("recipient")?,
            attempts: row.try_get("attempts").map_err(|e| format!("attempts: {e}"))?,
            expired_leases: row
                .try_get("expired_leases")
                .map_err(|e| format!("expired_leases: {e}"))?,
            contact_id: row.try_get("contact_id").map_err(|e| format!("contact_id: {e}"))?,
            connection: text("connection")?,
        })
    })();
    Claimed {
        row: decoded.map_err(|e| (id, format!("outbox row {id} cannot be read: {e}"))),
        contact: None,
        invoice: None,
        vehicle: None,
        scheduled: None,
    }
}

const OWN_COLUMNS: &str = "id, kind, subject_id, stage, event_date, channel, subject, body, \
    media_url, recipient, attempts, expired_leases, contact_id, connection";

/// `expr` as text an operator can read and the outbox can store: printable ASCII as it is (cut
/// at `max`), anything else (a blob, non-ASCII bytes, text that may not be UTF-8) as hex.
fn safe_text(expr: &str, max: u32) -> String {
    format!(
        "(CASE WHEN {expr} IS NULL THEN NULL \
              WHEN typeof({expr}) IN ('integer', 'real') THEN CAST({expr} AS TEXT) \
              WHEN typeof({expr}) = 'text' AND NOT CAST({expr} AS TEXT) GLOB '*[^ -~]*' \
                THEN substr({expr}, 1, {max}) \
              ELSE 'x''' || lower(hex(substr(CAST({expr} AS BLOB), 1, 16))) || '''' END)"
    )
}

/// A rule's candidates (`source`, with the raw channel preference in `channels`) with their
/// channels worked out (SPEC §10): the first `,` item is the group that gets the reminder, and
/// `+` joins channels that all get it. `g` is that group normalized as `+a+b+` (whitespace and
/// letter case ignored), `lead` its first known channel, `bad` whether it also names something
/// that is not a channel (or is empty), `shown` the group as a reason quotes it.
fn fanned(source: &str) -> String {
    let shown = safe_text("trim(t.first, ' ' || char(9, 10, 13))", 40);
    format!(
        "SELECT u.*, CASE WHEN u.pw > 0 AND (u.pt = 0 OR u.pw < u.pt) AND (u.pe = 0 OR u.pw < u.pe) \
                   THEN 'whatsapp' \
                 WHEN u.pt > 0 AND (u.pe = 0 OR u.pt < u.pe) THEN 'telegram' \
                 WHEN u.pe > 0 THEN 'email' END AS lead \
         FROM (SELECT t.*, {shown} AS shown, instr(t.g, '+whatsapp+') AS pw, \
                   instr(t.g, '+telegram+') AS pt, instr(t.g, '+email+') AS pe, \
                   replace(replace(replace(t.g, '+whatsapp', ''), '+telegram', ''), '+email', '') \
                       <> '+' AS bad \
               FROM (SELECT s.*, '+' || lower(replace(replace(replace(replace(s.first, ' ', ''), \
                         char(9), ''), char(10), ''), char(13), '')) || '+' AS g \
                     FROM (SELECT x.*, CASE WHEN instr(x.spec, ',') > 0 \
                               THEN substr(x.spec, 1, instr(x.spec, ',') - 1) ELSE x.spec END AS first \
                           FROM (SELECT y.*, CASE WHEN trim(CAST(COALESCE(y.channels, '') AS TEXT), \
                                         ' ' || char(9, 10, 13)) = '' THEN 'whatsapp' \
                                     ELSE CAST(y.channels AS TEXT) END AS spec \
                                 FROM ({source}) y) x) s) t) u"
    )
}

/// The WhatsApp connection a candidate names, as lanes claim it: lower case, and `NULL` for the
/// default one (unset, empty or `default`).
fn connection_name() -> String {
    let name = format!("lower(trim({}))", safe_text("u.connection", 40));
    format!("(CASE WHEN {name} IN ('', 'default') THEN NULL ELSE {name} END)")
}

/// Why a candidate gets no usable row, or `NULL`.
fn reason() -> String {
    let contact = safe_text("u.contact_id", 40);
    format!(
        "CASE WHEN u.contact_found IS NULL THEN \
           'contact ' || COALESCE({contact}, '(none)') || ' not found' \
         WHEN u.lead IS NULL AND u.shown = '' THEN u.spec_name || ': an empty channel name' \
         WHEN u.lead IS NULL THEN u.spec_name || ': unknown channel ''' || u.shown \
           || ''' (known: whatsapp, telegram, email; \",\" separates fallbacks, \"+\" sends on each)' \
         WHEN u.opted_out THEN 'contact opted out' END"
    )
}

/// Each candidate's lead row: its first channel, with its status and reason decided in SQL.
fn rows_sql(kind: &str, source: &str) -> String {
    let fanned = fanned(source);
    let reason = reason();
    let connection = connection_name();
    format!(
        "SELECT '{kind}' AS kind, u.subject_id, u.stage, u.event_date, u.dedup_key, u.contact_id, \
                CASE WHEN u.contact_found IS NULL THEN 'whatsapp' ELSE COALESCE(u.lead, u.shown) END \
                    AS channel, \
                CASE WHEN u.lead = 'whatsapp' THEN {connection} END AS connection, \
                u.body, u.media_url, 0 AS fanout, \
                CASE WHEN u.contact_found IS NULL OR u.lead IS NULL THEN 'failed' \
                     WHEN u.opted_out THEN 'skipped' ELSE 'pending' END AS status, \
                {reason} AS last_error \
         FROM ({fanned}) u"
    )
}

/// The other channels of a candidate's group (`whatsapp+email`), and a failed row naming what in
/// the group is not a channel. `lead_is_new` says which candidates' leads were just created.
fn extras_sql(kind: &str, source: &str, lead_is_new: &str) -> String {
    let fanned = fanned(source);
    let connection = connection_name();
    format!(
        "SELECT '{kind}' AS kind, u.subject_id, u.stage, u.event_date, u.dedup_key, u.contact_id, \
                ch.column1 AS channel, \
                CASE WHEN ch.column1 = 'whatsapp' THEN {connection} END AS connection, \
                u.body, u.media_url, 1 AS fanout, \
                CASE WHEN u.opted_out THEN 'skipped' ELSE 'pending' END AS status, \
                CASE WHEN u.opted_out THEN 'contact opted out' END AS last_error \
         FROM ({fanned}) u JOIN (VALUES ('whatsapp'), ('telegram'), ('email')) ch \
             ON instr(u.g, '+' || ch.column1 || '+') > 0 AND ch.column1 <> u.lead \
         WHERE u.contact_found IS NOT NULL AND {lead_is_new} \
         UNION ALL \
         SELECT '{kind}', u.subject_id, u.stage, u.event_date, u.dedup_key, u.contact_id, \
                u.shown, NULL, u.body, u.media_url, 1, 'failed', \
                u.spec_name || ': unknown or empty channel name in ''' || u.shown \
                    || ''' (known: whatsapp, telegram, email); sent on ' || u.lead || ' only' \
         FROM ({fanned}) u \
         WHERE u.contact_found IS NOT NULL AND u.lead IS NOT NULL AND u.bad AND {lead_is_new}"
    )
}

/// A scheduled message's status after one of its deliveries resolved (`v.status`), with `{s}`
/// its row: a cancel by its owner stands; a retry leaves it as it is; a recurring message goes
/// back to `pending` for its next run; a one-off is `sent` once any of its channels sent it.
const STATUS_CASE: &str = "CASE WHEN {s}.status = 'cancelled' THEN 'cancelled' \
                     WHEN v.status = 'pending' THEN {s}.status \
                     WHEN {s}.recurrence <> 'none' AND {s}.next_run_at IS NOT NULL THEN 'pending' \
                     WHEN v.status = 'sent' OR {s}.status = 'sent' THEN 'sent' \
                     WHEN v.status = 'cancelled' THEN 'cancelled' ELSE 'failed' END";

/// What a rule's source says about where its reminder goes: the contact's preference and
/// WhatsApp connection (the rules carry no text of their own: it is rendered at send time).
const CONTACT_CHANNELS: &str = "c.channels AS channels, \
    'contacts ' || c.id || ' channels' AS spec_name, \
    c.whatsapp_connection AS connection, NULL AS body, NULL AS media_url";

/// A bound parameter of a rule's source statement.
enum Bind {
    Text(String),
}

/// Counts a rule's candidates, then inserts their lead rows and, beside each new lead, the rest
/// of its channel group (or, dry, selects what would be created). `?1` is now; the source's own
/// parameters follow. Occurrences already queued are left to `ON CONFLICT`: the partial unique
/// index on `dedup_key` holds one lead per occurrence.
async fn generate(
    conn: &mut SqliteConnection,
    kind: &str,
    source: &str,
    binds: &[Bind],
    now: DateTime<Utc>,
    dry_run: bool,
    keep: usize,
) -> Result<Generated> {
    fn bind_all<'q>(
        mut q: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
        now: String,
        binds: &'q [Bind],
    ) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
        q = q.bind(now);
        for b in binds {
            q = match b {
                Bind::Text(s) => q.bind(s.as_str()),
            };
        }
        q
    }
    // The candidates; those whose occurrence has no message yet; those whose contact wants
    // several channels at once (`+`).
    let count_sql = format!(
        "SELECT count(*) AS found, \
             coalesce(sum(NOT EXISTS (SELECT 1 FROM messages m \
                 WHERE m.dedup_key = s.dedup_key)), 0) AS fresh, \
             coalesce(sum(instr(s.channels, '+') > 0), 0) AS fanned \
         FROM ({source}) s WHERE ?1 IS NOT NULL"
    );
    let counted = bind_all(sqlx::query(&count_sql), ts(now), binds).fetch_one(&mut *conn).await?;
    let found: i64 = counted.try_get("found")?;
    let fresh: i64 = counted.try_get("fresh")?;
    let fanned: i64 = counted.try_get("fanned")?;
    let mut out = Generated { found: found.max(0) as u64, ..Generated::default() };
    if fresh <= 0 {
        // Every occurrence in the window is queued already (the usual tick), or there is none:
        // neither statement below would write or select anything. Skipping them spares most of
        // a tick, which is spent compiling and evaluating them.
        return Ok(out);
    }
    let columns = "kind, subject_id, stage, event_date, dedup_key, contact_id, channel, \
                   connection, body, media_url, fanout, status, last_error";
    let statements = if dry_run {
        let new = sql::NOT_QUEUED;
        [rows_sql(kind, source), extras_sql(kind, source, new)].map(|rows| {
            format!(
                "SELECT NULL AS id, n.kind, n.subject_id, n.stage, n.channel, n.status, \
                     n.last_error AS error, n.dedup_key, n.contact_id, n.event_date, \
                     n.connection FROM ({rows}) n \
                 WHERE ?1 IS NOT NULL \
                   AND (n.fanout = 1 OR NOT EXISTS \
                        (SELECT 1 FROM messages m WHERE m.dedup_key = n.dedup_key))"
            )
        })
    } else {
        // Extras go beside a lead this very pass created (its `created_at` is this pass's now).
        let new = "EXISTS (SELECT 1 FROM messages m WHERE m.dedup_key = u.dedup_key \
                   AND m.origin = 'rule' AND m.fanout = 0 AND m.created_at = ?1)";
        [rows_sql(kind, source), extras_sql(kind, source, new)].map(|rows| {
            format!(
                "INSERT INTO messages ({columns}, next_attempt_at, created_at) \
                 SELECT {columns}, ?1, ?1 FROM ({rows}) n WHERE true \
                 ON CONFLICT DO NOTHING \
                 RETURNING id, kind, subject_id, stage, channel, status, last_error AS error, \
                     dedup_key, contact_id, event_date, connection"
            )
        })
    };
    // Extras (the other channels of a `+`) exist only for contacts that ask for them.
    let needed = if fanned > 0 { 2 } else { 1 };
    for sql in statements.iter().take(needed) {
        let rows = bind_all(sqlx::query(sql), ts(now), binds).fetch_all(&mut *conn).await?;
        for r in &rows {
            let status: String = r.try_get("status")?;
            out.queued += 1;
            match status.as_str() {
                "failed" => out.failed += 1,
                "skipped" => out.skipped += 1,
                _ => {}
            }
            if out.rows.len() < keep {
                out.rows.push(gen_row(r, status)?);
            }
        }
    }
    Ok(out)
}

/// A generated (or, dry, would-be) row. The contact id came from an input table, so it is read
/// tolerantly: a failed row may carry whatever the app wrote there.
fn gen_row(r: &SqliteRow, status: String) -> Result<GenRow> {
    let int = |col: &str| match Raw::read(r, col) {
        Raw::Integer(n) => Some(n),
        _ => None,
    };
    Ok(GenRow {
        id: int("id"),
        kind: r.try_get("kind")?,
        subject_id: int("subject_id"),
        stage: r.try_get("stage")?,
        channel: r.try_get("channel")?,
        status,
        error: r.try_get("error")?,
        dedup_key: r.try_get("dedup_key")?,
        contact_id: int("contact_id"),
        event_date: r.try_get::<Option<String>, _>("event_date")?.and_then(|d| d.parse().ok()),
        connection: r.try_get("connection")?,
    })
}

/// `{"id": "date", …}` of rows read in Rust, for a rule's second branch.
fn fixes_json(fixes: &[(i64, NaiveDate)]) -> String {
    let map: serde_json::Map<String, serde_json::Value> =
        fixes.iter().map(|(id, d)| (id.to_string(), json!(d.to_string()))).collect();
    serde_json::Value::Object(map).to_string()
}

/// An import batch as one JSON array of row objects, for `json_each`: dates as `YYYY-MM-DD`,
/// instants as fixed-width UTC text, like every timestamp reminderctl writes.
fn import_rows_json(batch: &ImportBatch) -> String {
    let rows: Vec<serde_json::Value> = (0..batch.len())
        .map(|i| {
            let mut row = serde_json::Map::new();
            row.insert("ref".into(), json!(batch.refs[i]));
            if let Some(ids) = &batch.ids {
                row.insert("id".into(), json!(ids[i]));
            }
            if let Some(contacts) = &batch.contact_refs {
                row.insert("contact_ref".into(), json!(contacts[i]));
            }
            for column in &batch.columns {
                let value = match &column.values {
                    ImportValues::Text(v) => json!(v[i]),
                    ImportValues::Int(v) => json!(v[i]),
                    ImportValues::Date(v) => json!(v[i].map(|d| d.to_string())),
                    ImportValues::Instant(v) => json!(v[i].map(ts)),
                };
                row.insert(column.name.into(), value);
            }
            serde_json::Value::Object(row)
        })
        .collect();
    serde_json::Value::Array(rows).to_string()
}

/// How long before a scheduled message's stored time a naive local value may fall due: SQL
/// compares it as UTC, Rust then reads it in the zone. No zone is more than 14 hours ahead.
/// `claim_ids`: the named messages (`?1`) that are pending or whose lease ran out. `NOT INDEXED`
/// keeps the ids driving it, as in the result writes below: after `ANALYZE` on an empty outbox,
/// SQLite 3.51 would read every pending row through `messages_open_subject` instead (3.46, the
/// version built in, does not).
fn claim_ids_sql() -> String {
    format!(
        "UPDATE messages NOT INDEXED SET status = 'sending', claimed_by = ?2, claimed_until = ?3, \
             expired_leases = expired_leases + (status = 'sending') \
         WHERE id IN (SELECT value FROM json_each(?1)) AND (status = 'pending' \
             OR (status = 'sending' AND claimed_until <= ?4)) \
         RETURNING {OWN_COLUMNS}"
    )
}

/// The result writes' statements. The batch drives each of them: `NOT INDEXED` (the rowid is
/// still used), `CROSS JOIN` and a materialized batch keep the planner from scanning the pass's
/// leased rows (or every scheduled message) and reading the batch's JSON again for each row. It
/// does that after `ANALYZE` ran on an empty outbox, which records its indexes as empty: a send
/// of 10k messages then took six times the CPU.
///
/// Each outcome of the batch (`?2`) on a row this pass (`?1`) still holds; returns their ids.
const RECORD_RESULTS: &str = "UPDATE messages NOT INDEXED SET status = v.status, \
        attempts = v.attempts, next_attempt_at = COALESCE(v.next_at, messages.next_attempt_at), \
        last_error = v.error, provider = COALESCE(v.provider, messages.provider), \
        provider_message_id = COALESCE(v.pid, messages.provider_message_id), \
        recipient = COALESCE(v.recipient, messages.recipient), \
        subject = COALESCE(v.subject, messages.subject), body = COALESCE(v.body, messages.body), \
        sent_at = COALESCE(v.sent_at, messages.sent_at), claimed_by = NULL, claimed_until = NULL \
    FROM (SELECT value ->> 'id' AS id, value ->> 'status' AS status, \
              value ->> 'attempts' AS attempts, value ->> 'next_at' AS next_at, \
              value ->> 'error' AS error, value ->> 'provider' AS provider, value ->> 'pid' AS pid, \
              value ->> 'recipient' AS recipient, value ->> 'subject' AS subject, \
              value ->> 'body' AS body, value ->> 'sent_at' AS sent_at \
          FROM json_each(?2)) v \
    WHERE messages.id = v.id AND messages.claimed_by = ?1 AND messages.status = 'sending' \
    RETURNING messages.id";

/// The same reminder on the contact's next channel, for each `{id, channel, at}` of `?1`; the row
/// just written keeps its rendered body, so dunning and maintenance texts are rendered afresh.
const RECORD_FALLBACKS: &str = "INSERT INTO messages (kind, subject_id, stage, event_date, \
        dedup_key, origin, contact_id, channel, body, media_url, status, next_attempt_at, \
        created_at) \
    SELECT m.kind, m.subject_id, m.stage, m.event_date, m.dedup_key, 'fallback', m.contact_id, \
        f.value ->> 'channel', \
        CASE WHEN m.kind IN ('dunning', 'maintenance') THEN NULL ELSE m.body END, \
        m.media_url, 'pending', f.value ->> 'at', f.value ->> 'at' \
    FROM json_each(?1) f CROSS JOIN messages m ON m.id = f.value ->> 'id' \
    WHERE true ON CONFLICT DO NOTHING RETURNING channel";

/// A scheduled message shows its last delivery on its own row (seed 004's vocabulary): `sent`
/// or `failed` for a one-off, back to `pending` for a recurring one.
fn record_scheduled() -> String {
    format!(
        "WITH v AS MATERIALIZED (SELECT m.subject_id, j.value ->> 'status' AS status, \
                 j.value ->> 'error' AS error, j.value ->> 'pid' AS pid, \
                 j.value ->> 'sent_at' AS sent_at \
             FROM json_each(?1) j \
             CROSS JOIN messages m ON m.id = j.value ->> 'id' AND m.kind = 'scheduled') \
         UPDATE scheduled_messages SET status = {}, \
             error = CASE WHEN v.status = 'sent' THEN NULL ELSE v.error END, \
             message_id = CASE WHEN v.status = 'sent' \
                 THEN COALESCE(v.pid, scheduled_messages.message_id) \
                 ELSE scheduled_messages.message_id END, \
             sent_at = CASE WHEN v.status = 'sent' THEN v.sent_at \
                 ELSE scheduled_messages.sent_at END \
         FROM v WHERE scheduled_messages.id = v.subject_id",
        STATUS_CASE.replace("{s}", "scheduled_messages")
    )
}

const LOCAL_SLACK_SECONDS: i64 = 14 * 3600;

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

    async fn scan_inputs(&self) -> Result<InputScan> {
        let mut scan = InputScan::default();
        let invoices = sqlx::query(&odd_invoices_sql()).fetch_all(&self.pool).await?;
        for row in &invoices {
            let id: i64 = row.try_get("id")?;
            match Raw::read(row, "due_date").date(self.tz, ("invoices", id, "due_date")) {
                Ok(Some(d)) => scan.invoice_due.push((id, d)),
                Ok(None) => {}
                Err(bad) => scan.bad.push(bad),
            }
        }
        let vehicles = sqlx::query(&odd_vehicles_sql()).fetch_all(&self.pool).await?;
        for row in &vehicles {
            let id: i64 = row.try_get("id")?;
            let next = Raw::read(row, "next_visit_date");
            let last = Raw::read(row, "last_visit_date");
            match visit_date(&next, &last, self.tz, id) {
                Ok(Some(d)) => scan.vehicle_visit.push((id, d)),
                Ok(None) => {}
                Err(bad) => scan.bad.push(bad),
            }
        }
        // Generation needs both times of a scheduled message (the series starts at
        // `scheduled_at`), so each one that Rust cannot read is reported, whichever is first.
        let scheduled = sqlx::query(&format!(
            "SELECT id, scheduled_at, next_run_at FROM scheduled_messages \
             WHERE status IN ('pending', 'active') AND ({} OR {}) ORDER BY id",
            odd_instant("next_run_at"),
            odd_instant("scheduled_at")
        ))
        .fetch_all(&self.pool)
        .await?;
        for row in &scheduled {
            let id: i64 = row.try_get("id")?;
            for column in ["next_run_at", "scheduled_at"] {
                let raw = Raw::read(row, column);
                if raw == Raw::Null {
                    continue;
                }
                let problem = match raw.text(("scheduled_messages", id, column)) {
                    Ok(Some(t)) => match dates::instant(&t, self.tz) {
                        Ok(_) => continue,
                        Err(e) => e.to_string(),
                    },
                    _ => format!("{} is not a timestamp", raw.shown()),
                };
                scan.bad.push(BadValue::new(
                    "scheduled_messages",
                    id,
                    column,
                    &raw.shown(),
                    problem,
                ));
            }
        }
        Ok(scan)
    }

    async fn generate_dunning(
        &self,
        stage: &str,
        due: (NaiveDate, NaiveDate),
        scan: &InputScan,
        now: DateTime<Utc>,
        dry_run: bool,
        keep: usize,
    ) -> Result<Generated> {
        // Rows whose due date SQL reads as written, then the few read in Rust (offsets).
        let columns = |due_expr: &str| {
            format!(
                "SELECT i.id AS subject_id, ?2 AS stage, {due_expr} AS event_date, \
                     'dunning:' || i.id || ':' || {due_expr} || ':' || ?2 AS dedup_key, \
                     i.contact_id, c.id AS contact_found, \
                     (c.opted_out_at IS NOT NULL) AS opted_out, \
                     {CONTACT_CHANNELS}"
            )
        };
        let source = format!(
            "{} FROM invoices i LEFT JOIN contacts c ON c.id = i.contact_id \
             WHERE i.status = 'unpaid' AND i.is_test = 0 AND date(i.due_date) BETWEEN ?3 AND ?4 \
               AND NOT {} \
             UNION ALL \
             {} FROM json_each(?5) f JOIN invoices i ON i.id = CAST(f.key AS INTEGER) \
             LEFT JOIN contacts c ON c.id = i.contact_id \
             WHERE i.status = 'unpaid' AND i.is_test = 0 AND f.value BETWEEN ?3 AND ?4",
            columns("date(i.due_date)"),
            odd_date("i.due_date"),
            columns("f.value"),
        );
        let binds = [
            Bind::Text(stage.to_string()),
            Bind::Text(due.0.to_string()),
            Bind::Text(due.1.to_string()),
            Bind::Text(fixes_json(&scan.invoice_due)),
        ];
        let mut w = Writer::begin(&self.pool).await?;
        let out = generate(w.conn(), "dunning", &source, &binds, now, dry_run, keep).await?;
        w.commit().await?;
        Ok(out)
    }

    async fn generate_maintenance(
        &self,
        visit: (NaiveDate, NaiveDate),
        scan: &InputScan,
        now: DateTime<Utc>,
        dry_run: bool,
        keep: usize,
    ) -> Result<Generated> {
        // date(d, '+4 months') overflows into the next month (Oct 31 → Mar 3); clamp to the
        // month's last day as PostgreSQL does (Oct 31 → Feb 28).
        let columns = "SELECT v.id AS subject_id, 'visit' AS stage, v.visit AS event_date, \
                 'maintenance:' || v.id || ':' || v.visit AS dedup_key, \
                 v.contact_id, c.id AS contact_found, (c.opted_out_at IS NOT NULL) AS opted_out";
        let source = format!(
            "{columns}, {CONTACT_CHANNELS} \
             FROM (SELECT id, contact_id, CASE WHEN next_visit_date IS NOT NULL \
                       THEN date(next_visit_date) \
                       WHEN strftime('%d', date(last_visit_date, '+4 months')) \
                                 = strftime('%d', date(last_visit_date)) \
                            THEN date(last_visit_date, '+4 months') \
                            ELSE date(last_visit_date, 'start of month', '+5 months', '-1 day') \
                       END AS visit FROM vehicles \
                   WHERE NOT {} AND NOT (next_visit_date IS NULL AND {})) v \
             LEFT JOIN contacts c ON c.id = v.contact_id \
             WHERE v.visit BETWEEN ?2 AND ?3 \
             UNION ALL \
             {columns}, {CONTACT_CHANNELS} \
             FROM (SELECT ve.id, ve.contact_id, f.value AS visit FROM json_each(?4) f \
                   JOIN vehicles ve ON ve.id = CAST(f.key AS INTEGER)) v \
             LEFT JOIN contacts c ON c.id = v.contact_id \
             WHERE v.visit BETWEEN ?2 AND ?3",
            odd_date("next_visit_date"),
            odd_date("last_visit_date"),
        );
        let binds = [
            Bind::Text(visit.0.to_string()),
            Bind::Text(visit.1.to_string()),
            Bind::Text(fixes_json(&scan.vehicle_visit)),
        ];
        let mut w = Writer::begin(&self.pool).await?;
        let out = generate(w.conn(), "maintenance", &source, &binds, now, dry_run, keep).await?;
        w.commit().await?;
        Ok(out)
    }

    async fn due_scheduled(
        &self,
        now: DateTime<Utc>,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<DueScheduled>> {
        // SQL narrows by the stored text read as UTC, widened by the largest zone offset; Rust
        // then reads each value in the zone (a naive value is local time) and decides. Values
        // SQL cannot read at all (`… +0700`) are Rust's to decide too; the ones Rust cannot
        // read either are skipped here and reported by `scan_inputs`.
        let rows = sqlx::query(
            "SELECT id, scheduled_at, COALESCE(next_run_at, scheduled_at) AS run_at, recurrence \
             FROM scheduled_messages \
             WHERE status IN ('pending', 'active', 'processing') AND NOT (status = 'processing' \
                   AND next_run_at IS NULL) \
               AND (unixepoch(COALESCE(next_run_at, scheduled_at)) <= ?1 \
                    OR unixepoch(COALESCE(next_run_at, scheduled_at)) IS NULL) AND id > ?2 \
             ORDER BY id LIMIT ?3",
        )
        .bind(now.timestamp() + LOCAL_SLACK_SECONDS)
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut due = Vec::new();
        for r in &rows {
            let id: i64 = r.try_get("id")?;
            let text = |col| Raw::read(r, col).text(("scheduled_messages", id, "scheduled_at"));
            let (Ok(Some(scheduled)), Ok(Some(run))) = (text("scheduled_at"), text("run_at"))
            else {
                continue;
            };
            let (Ok(scheduled_at), Ok(run_at)) =
                (dates::instant(&scheduled, self.tz), dates::instant(&run, self.tz))
            else {
                continue;
            };
            if run_at <= now {
                due.push(DueScheduled {
                    id,
                    scheduled_at,
                    run_at,
                    recurrence: r.try_get::<Option<String>, _>("recurrence")?.unwrap_or_default(),
                    stored_run_at: Some(run),
                });
            }
        }
        // A page whose rows all fell outside the zone's slack still moves the caller on.
        if due.is_empty() && rows.len() as i64 == limit {
            if let Some(last) = rows.last() {
                let id: i64 = last.try_get("id")?;
                let mut page = Box::pin(self.due_scheduled(now, id, limit)).await?;
                due.append(&mut page);
            }
        }
        Ok(due)
    }

    async fn queue_scheduled(
        &self,
        advances: &[ScheduledAdvance],
        now: DateTime<Utc>,
        dry_run: bool,
        keep: usize,
    ) -> Result<Generated> {
        let mut w = Writer::begin(&self.pool).await?;
        let mut won: Vec<&ScheduledAdvance> = advances.iter().collect();
        if !dry_run {
            let batch: Vec<_> = advances
                .iter()
                .map(|a| {
                    json!({"id": a.id, "run_at": a.stored_run_at, "next": a.next_run_at.map(ts)})
                })
                .collect();
            // Compare-and-set on the run time as stored: of two passes, only one moves the
            // series on. The row is `processing` until the delivery writes its outcome back.
            let ids: Vec<i64> = sqlx::query_scalar(
                "UPDATE scheduled_messages SET next_run_at = d.next, status = 'processing' \
                 FROM (SELECT value ->> 'id' AS id, value ->> 'run_at' AS run_at, \
                           value ->> 'next' AS next FROM json_each(?1)) d \
                 WHERE scheduled_messages.id = d.id \
                   AND scheduled_messages.status IN ('pending', 'active', 'processing') \
                   AND COALESCE(scheduled_messages.next_run_at, scheduled_messages.scheduled_at) \
                       = d.run_at \
                 RETURNING scheduled_messages.id",
            )
            .bind(serde_json::Value::Array(batch).to_string())
            .fetch_all(w.conn())
            .await?;
            won.retain(|a| ids.contains(&a.id));
            // An occurrence still waiting when the next one comes was overtaken by it: it is
            // cancelled, never sent beside the new one.
            sqlx::query(
                "UPDATE messages SET status = 'cancelled', \
                     last_error = 'overtaken by a later occurrence of scheduled message ' \
                         || subject_id \
                 WHERE kind = 'scheduled' AND status = 'pending' \
                   AND subject_id IN (SELECT value FROM json_each(?1))",
            )
            .bind(serde_json::to_string(&ids).unwrap_or_default())
            .execute(w.conn())
            .await?;
        }
        let batch: Vec<_> =
            won.iter().map(|a| json!({"id": a.id, "key": a.dedup_key, "stage": a.stage})).collect();
        let source = "SELECT s.id AS subject_id, d.stage, NULL AS event_date, d.key AS dedup_key, \
                 s.contact_id, c.id AS contact_found, (c.opted_out_at IS NOT NULL) AS opted_out, \
                 CASE WHEN s.channel IS NULL OR (typeof(s.channel) = 'text' \
                     AND trim(s.channel, ' ' || char(9, 10, 13)) = '') THEN 'whatsapp' \
                     ELSE s.channel END AS channels, \
                 'scheduled_messages ' || s.id || ' channel' AS spec_name, s.connection, \
                 COALESCE(NULLIF(s.body, ''), s.caption, '') AS body, s.media_url \
             FROM (SELECT value ->> 'id' AS id, value ->> 'key' AS key, value ->> 'stage' AS stage \
                   FROM json_each(?2)) d \
             JOIN scheduled_messages s ON s.id = d.id \
             LEFT JOIN contacts c ON c.id = s.contact_id";
        let binds = [Bind::Text(serde_json::Value::Array(batch).to_string())];
        let mut out = generate(w.conn(), "scheduled", source, &binds, now, dry_run, keep).await?;
        if !dry_run {
            // An occurrence that could not even be queued (no contact, no usable channel, opted
            // out) is its row's last delivery too.
            let keys: Vec<&str> = won.iter().map(|a| a.dedup_key.as_str()).collect();
            sqlx::query(
                "UPDATE scheduled_messages SET error = m.last_error, \
                     status = CASE WHEN scheduled_messages.recurrence <> 'none' \
                         AND scheduled_messages.next_run_at IS NOT NULL THEN 'pending' \
                         ELSE 'failed' END \
                 FROM messages m \
                 WHERE m.kind = 'scheduled' AND m.subject_id = scheduled_messages.id \
                   AND m.fanout = 0 AND m.status IN ('failed', 'skipped') \
                   AND m.dedup_key IN (SELECT value FROM json_each(?1))",
            )
            .bind(serde_json::to_string(&keys).unwrap_or_default())
            .execute(w.conn())
            .await?;
        }
        w.commit().await?;
        out.found = advances.len() as u64;
        Ok(out)
    }

    async fn cancel_settled(&self, now: DateTime<Utc>, dry_run: bool) -> Result<Vec<GenRow>> {
        let _ = now;
        let sql = if dry_run { sql::SETTLED_PREVIEW } else { sql::SETTLED_CANCEL };
        let mut c = Single::acquire(&self.pool).await?;
        let rows = sqlx::query(sql).fetch_all(c.conn()).await?;
        c.done();
        rows.iter().map(|r| gen_row(r, "cancelled".to_string())).collect()
    }

    async fn reserve_slots(
        &self,
        route: &Route,
        count: u32,
        interval_ns: i64,
        horizon: Duration,
    ) -> Result<Option<SlotGrant>> {
        let key = route.key();
        let mut w = Writer::begin(&self.pool).await?;
        sqlx::query(sql::ENSURE_ROUTE).bind(&key).execute(w.conn()).await?;
        let next: i64 =
            sqlx::query_scalar("SELECT next_slot_ns FROM channel_state WHERE channel = ?1")
                .bind(&key)
                .fetch_one(w.conn())
                .await?;
        let Some(grant) = super::slots(next, count, interval_ns, real_ns(), horizon) else {
            w.commit().await?;
            return Ok(None);
        };
        sqlx::query(sql::TAKE_SLOTS).bind(&key).bind(grant.end_ns).execute(w.conn()).await?;
        w.commit().await?;
        Ok(Some(grant))
    }

    async fn return_slots(&self, route: &Route, grant: SlotGrant, unused: u32) -> Result<()> {
        let mut c = Single::acquire(&self.pool).await?;
        sql::return_slots::<Sqlite>(c.conn(), route, grant, unused).await?;
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
        let key = route.key();
        let mut w = Writer::begin(&self.pool).await?;
        sqlx::query(sql::ENSURE_ROUTE).bind(&key).execute(w.conn()).await?;
        let (used_month, used): (Option<String>, i64) =
            sqlx::query_as("SELECT quota_month, quota_used FROM channel_state WHERE channel = ?1")
                .bind(&key)
                .fetch_one(w.conn())
                .await?;
        let used = if used_month.as_deref() == Some(month) { used.max(0) as u64 } else { 0 };
        let granted = u64::from(want).min(quota.saturating_sub(used)) as u32;
        sqlx::query(
            "UPDATE channel_state SET quota_month = ?2, quota_used = ?3 WHERE channel = ?1",
        )
        .bind(&key)
        .bind(month)
        .bind(i64::try_from(used + u64::from(granted)).unwrap_or(i64::MAX))
        .execute(w.conn())
        .await?;
        w.commit().await?;
        Ok(granted)
    }

    async fn return_quota(&self, route: &Route, month: &str, unused: u32) -> Result<()> {
        if unused == 0 {
            return Ok(());
        }
        let mut c = Single::acquire(&self.pool).await?;
        sql::return_quota::<Sqlite>(c.conn(), route, month, unused).await?;
        c.done();
        Ok(())
    }

    async fn due_by_connection(&self, now: DateTime<Utc>) -> Result<Vec<(Option<String>, u64)>> {
        let mut c = Single::acquire(&self.pool).await?;
        let rows = sql::due_by_connection::<Sqlite>(c.conn(), now).await?;
        c.done();
        Ok(rows)
    }

    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Vec<Claimed>> {
        // One statement: SQLite runs it under its write lock, so two passes never take the
        // same row, and there is no read-then-write upgrade to deadlock on. Rows whose lease
        // ran out (real clock) come first: they are the oldest work.
        let kinds = if request.only_scheduled { " AND kind = 'scheduled'" } else { "" };
        let sql = format!(
            "UPDATE messages SET status = 'sending', claimed_by = ?4, claimed_until = ?5, \
                 expired_leases = expired_leases + (status = 'sending') \
             WHERE id IN ( \
                 SELECT id FROM (SELECT id FROM messages \
                     WHERE channel = ?1 AND connection IS ?7 AND status = 'sending' \
                       AND claimed_until <= ?6{kinds} \
                     ORDER BY claimed_until LIMIT ?3) \
                 UNION ALL \
                 SELECT id FROM (SELECT id FROM messages \
                     WHERE channel = ?1 AND connection IS ?7 AND status = 'pending' \
                       AND next_attempt_at <= ?2{kinds} \
                     ORDER BY next_attempt_at, id LIMIT ?3) \
                 LIMIT ?3) \
             RETURNING {OWN_COLUMNS}"
        );
        let mut c = Single::acquire(&self.pool).await?;
        let rows = sqlx::query(&sql)
            .bind(request.route.channel.as_str())
            .bind(ts(request.now))
            .bind(request.limit)
            .bind(request.token)
            .bind(real(request.lease))
            .bind(real(Duration::ZERO))
            .bind(request.route.connection.as_deref())
            .fetch_all(c.conn())
            .await?;
        c.done();
        self.claimed_context(rows, request.token).await
    }

    async fn claim_ids(&self, ids: &[i64], token: &str, lease: Duration) -> Result<Vec<Claimed>> {
        let ids = serde_json::to_string(ids).unwrap_or_default();
        let mut c = Single::acquire(&self.pool).await?;
        let rows = sqlx::query(&claim_ids_sql())
            .bind(ids)
            .bind(token)
            .bind(real(lease))
            .bind(real(Duration::ZERO))
            .fetch_all(c.conn())
            .await?;
        c.done();
        self.claimed_context(rows, token).await
    }

    async fn record(&self, token: &str, outcomes: &[Outcome]) -> Result<Recorded> {
        if outcomes.is_empty() {
            return Ok(Recorded::default());
        }
        let written: Vec<Written<'_>> = outcomes.iter().map(Written::from).collect();
        let batch: Vec<_> = written
            .iter()
            .map(|o| {
                json!({
                    "id": o.id, "status": o.status, "attempts": o.attempts,
                    "next_at": o.next_attempt_at.map(ts), "error": o.error,
                    "provider": o.provider, "pid": o.provider_message_id,
                    "recipient": o.recipient, "subject": o.subject, "body": o.body,
                    "sent_at": o.sent_at.map(ts),
                })
            })
            .collect();
        let mut w = Writer::begin(&self.pool).await?;
        let updated: Vec<i64> = sqlx::query_scalar(RECORD_RESULTS)
            .bind(token)
            .bind(serde_json::Value::Array(batch).to_string())
            .fetch_all(w.conn())
            .await?;
        let lost: Vec<i64> =
            written.iter().map(|o| o.id).filter(|id| !updated.contains(id)).collect();
        let fallbacks: Vec<_> = written
            .iter()
            .filter(|o| updated.contains(&o.id))
            .filter_map(|o| Some(json!({"id": o.id, "channel": o.fallback?, "at": ts(o.at)})))
            .collect();
        let mut recorded = Recorded { lost, fallbacks: Vec::new() };
        if !fallbacks.is_empty() {
            let channels: Vec<String> = sqlx::query_scalar(RECORD_FALLBACKS)
                .bind(serde_json::Value::Array(fallbacks).to_string())
                .fetch_all(w.conn())
                .await?;
            recorded.fallbacks = channels.iter().filter_map(|c| c.parse().ok()).collect();
            recorded.fallbacks.sort();
            recorded.fallbacks.dedup();
        }
        // A scheduled message shows its last delivery on its own row (seed 004's vocabulary):
        // `sent` or `failed` for a one-off, back to `pending` for a recurring one.
        let deliveries: Vec<_> = written
            .iter()
            .filter(|o| o.label.is_some() && updated.contains(&o.id))
            .map(|o| {
                json!({"id": o.id, "status": o.status, "error": o.error,
                       "pid": o.provider_message_id, "sent_at": o.sent_at.map(ts)})
            })
            .collect();
        if !deliveries.is_empty() {
            sqlx::query(&record_scheduled())
                .bind(serde_json::Value::Array(deliveries).to_string())
                .execute(w.conn())
                .await?;
        }
        let history: Vec<_> = written
            .iter()
            .filter_map(|o| {
                let label = o.label?;
                let label = if recorded.lost.contains(&o.id) {
                    format!("late {label}")
                } else {
                    label.to_string()
                };
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
            .execute(w.conn())
            .await?;
        }
        w.commit().await?;
        Ok(recorded)
    }

    async fn set_channel_down(
        &self,
        route: &Route,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut c = Single::acquire(&self.pool).await?;
        sql::set_channel_down::<Sqlite>(c.conn(), route, reason, now).await?;
        c.done();
        Ok(())
    }

    async fn preview_due(
        &self,
        channel: ChannelKind,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<GenRow>> {
        let rows = sqlx::query(&sql::preview_due::<Sqlite>())
            .bind(ts(now))
            .bind(channel.as_str())
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| gen_row(r, r.try_get("status")?)).collect()
    }

    async fn context_of(&self, rows: &[GenRow]) -> Result<Vec<Claimed>> {
        self.candidates_context(rows).await
    }

    async fn count_due(&self, route: &Route, now: DateTime<Utc>) -> Result<u64> {
        let mut c = Single::acquire(&self.pool).await?;
        let n = sql::count_due::<Sqlite>(c.conn(), route, now).await?;
        c.done();
        Ok(n)
    }

    async fn status(&self, now: DateTime<Utc>, failures: i64) -> Result<StatusData> {
        let mut c = Single::acquire(&self.pool).await?;
        let sql::StatusRows { counts, failures, down, due } =
            sql::status_rows::<Sqlite>(c.conn(), failures, now).await?;
        c.done();
        let real_now = real_ns();
        let slots = sqlx::query_as::<_, (String, i64, Option<String>, i64)>(
            "SELECT channel, next_slot_ns, quota_month, quota_used FROM channel_state \
             ORDER BY channel",
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|(channel, next, quota_month, quota_used)| SlotState {
            channel,
            next_free_in: Duration::from_nanos(next.saturating_sub(real_now).max(0) as u64),
            quota_month,
            quota_used,
        })
        .collect();
        let bad_inputs = self.scan_inputs().await?.bad;
        Ok(StatusData { counts, failures, down, due, slots, bad_inputs })
    }

    async fn insert_messages(&self, rows: &[NewMessage], now: DateTime<Utc>) -> Result<Vec<i64>> {
        let mut c = Single::acquire(&self.pool).await?;
        let ids = sql::insert_messages::<Sqlite>(c.conn(), rows, now).await?;
        c.done();
        Ok(ids)
    }

    async fn test_contact(
        &self,
        name: &str,
        email: &str,
        phone: &str,
        dry_run: bool,
    ) -> Result<Option<TestContact>> {
        let mut w = Writer::begin(&self.pool).await?;
        let contact = sql::test_contact::<Sqlite>(w.conn(), name, email, phone, dry_run).await?;
        w.commit().await?;
        Ok(contact)
    }

    async fn create_test_invoice(
        &self,
        contact_id: i64,
        number: &str,
        amount: i64,
        due: NaiveDate,
    ) -> Result<i64> {
        let mut c = Single::acquire(&self.pool).await?;
        let id =
            sql::create_test_invoice::<Sqlite>(c.conn(), contact_id, number, amount, due).await?;
        c.done();
        Ok(id)
    }

    async fn seed(&self, demo: &DemoData, reset: bool) -> Result<SeedCounts> {
        let mut w = Writer::begin(&self.pool).await?;
        let counts = sql::seed::<Sqlite>(w.conn(), demo, reset).await?;
        w.commit().await?;
        Ok(counts)
    }

    async fn contact_names(&self, ids: &[i64]) -> Result<Vec<(i64, String)>> {
        let rows = sqlx::query(
            "SELECT id, name FROM contacts WHERE id IN (SELECT value FROM json_each(?1)) \
             ORDER BY id",
        )
        .bind(serde_json::to_string(ids).unwrap_or_default())
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for row in &rows {
            let id: i64 = row.try_get("id")?;
            let name = Raw::read(row, "name").text(("contacts", id, "name")).ok().flatten();
            out.push((id, name.unwrap_or_default()));
        }
        Ok(out)
    }

    async fn add_scheduled(&self, rows: &[NewScheduled]) -> Result<Vec<i64>> {
        let mut w = Writer::begin(&self.pool).await?;
        let ids = sql::add_scheduled::<Sqlite>(w.conn(), rows).await?;
        w.commit().await?;
        Ok(ids)
    }

    async fn list_scheduled(
        &self,
        id: Option<i64>,
        contact: Option<i64>,
        created_by: Option<&str>,
    ) -> Result<Vec<ScheduledListing>> {
        let rows = sqlx::query(sql::LIST_SCHEDULED)
            .bind(id)
            .bind(contact)
            .bind(created_by)
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::new();
        for row in &rows {
            let id: i64 = row.try_get("id")?;
            // What an app wrote is shown as it is; a value that is not text is shown as hex.
            let text = |col: &'static str| {
                let raw = Raw::read(row, col);
                raw.text(("scheduled_messages", id, col)).unwrap_or_else(|_| Some(raw.shown()))
            };
            let next_run = text("next_run");
            out.push(ScheduledListing {
                id,
                contact_id: match Raw::read(row, "contact_id") {
                    Raw::Integer(n) => Some(n),
                    _ => None,
                },
                contact_name: text("contact_name"),
                channel: text("channel").unwrap_or_default(),
                connection: text("connection"),
                body: text("body").unwrap_or_default(),
                media_url: text("media_url"),
                caption: text("caption"),
                recurrence: text("recurrence").unwrap_or_default(),
                status: text("status").unwrap_or_default(),
                next_run_at: next_run.as_deref().and_then(|t| dates::instant(t, self.tz).ok()),
                next_run,
                error: text("error"),
                message_id: text("message_id"),
                sent_at: text("sent_at"),
                created_by: text("created_by"),
            });
        }
        Ok(out)
    }

    async fn edit_scheduled(&self, id: i64, edit: &ScheduledEdit) -> Result<()> {
        let mut w = Writer::begin(&self.pool).await?;
        sql::edit_scheduled::<Sqlite>(w.conn(), id, edit).await?;
        w.commit().await
    }

    async fn cancel_scheduled(&self, id: i64, by: Option<&str>) -> Result<u64> {
        let mut w = Writer::begin(&self.pool).await?;
        let n = sql::cancel_scheduled::<Sqlite>(w.conn(), id, by).await?;
        w.commit().await?;
        Ok(n)
    }

    async fn import_lookup(
        &self,
        table: ImportTable,
        refs: &[String],
        ids: &[i64],
    ) -> Result<ImportLookup> {
        let t = table.table();
        let scheduled = if table == ImportTable::Scheduled { "scheduled_at" } else { "NULL" };
        let mut lookup = ImportLookup::default();
        if !refs.is_empty() {
            let rows = sqlx::query(&format!(
                "SELECT id, ref, {scheduled} AS scheduled_at FROM {t} \
                 WHERE ref IN (SELECT value FROM json_each(?1))"
            ))
            .bind(json!(refs).to_string())
            .fetch_all(&self.pool)
            .await?;
            for row in &rows {
                let id: i64 = row.try_get("id")?;
                let Ok(Some(r)) = Raw::read(row, "ref").text((t, id, "ref")) else { continue };
                let scheduled_at = match Raw::read(row, "scheduled_at") {
                    Raw::Text(text) => dates::instant(&text, self.tz).ok(),
                    _ => None,
                };
                lookup.by_ref.insert(r, ImportedRow { id, scheduled_at });
            }
        }
        if !ids.is_empty() {
            let rows = sqlx::query(&format!(
                "SELECT id, ref FROM {t} WHERE id IN (SELECT value FROM json_each(?1))"
            ))
            .bind(json!(ids).to_string())
            .fetch_all(&self.pool)
            .await?;
            for row in &rows {
                let id: i64 = row.try_get("id")?;
                let r = Raw::read(row, "ref").text((t, id, "ref")).ok().flatten();
                lookup.by_id.insert(id, r);
            }
        }
        Ok(lookup)
    }

    async fn import(
        &self,
        table: ImportTable,
        batches: &mut ImportSource<'_>,
    ) -> Result<ImportCounts> {
        let t = table.table();
        // One write transaction for the whole file: other passes wait (up to the busy timeout)
        // for their writes, and nobody ever sees half a file.
        let mut w = Writer::begin(&self.pool).await?;
        let mut counts = ImportCounts::default();
        for batch in batches {
            let batch = batch.map_err(StoreError::Other)?;
            if batch.is_empty() {
                continue;
            }
            let before: std::collections::HashSet<String> = sqlx::query_scalar(&format!(
                "SELECT ref FROM {t} WHERE ref IN (SELECT value FROM json_each(?1))"
            ))
            .bind(json!(batch.refs).to_string())
            .fetch_all(w.conn())
            .await?
            .into_iter()
            .collect();
            let columns = super::import_columns(&batch);
            let values: Vec<String> = columns
                .iter()
                .map(|c| match *c {
                    "contact_id" => "c.id".to_string(),
                    c => format!("j.value ->> '{c}'"),
                })
                .collect();
            let join = if batch.contact_refs.is_some() {
                "JOIN contacts c ON c.ref = j.value ->> 'contact_ref'"
            } else {
                ""
            };
            // `WHERE true` keeps SQLite from reading ON CONFLICT as part of the join.
            let sql = format!(
                "INSERT INTO {t} ({}) SELECT {} FROM json_each(?1) j {join} WHERE true {} \
                 RETURNING ref",
                columns.join(", "),
                values.join(", "),
                super::import_conflict(table, &batch)
            );
            let returned: std::collections::HashSet<String> = sqlx::query_scalar(&sql)
                .bind(import_rows_json(&batch))
                .fetch_all(w.conn())
                .await?
                .into_iter()
                .collect();
            counts += super::tally_import(&batch.refs, &before, &returned)?;
        }
        // Rowids need no care: a row inserted without an id gets one past the largest.
        w.commit().await?;
        Ok(counts)
    }

    async fn has_open_messages(&self) -> Result<bool> {
        let n: i64 = sqlx::query_scalar(OPEN_MESSAGES).fetch_one(&self.pool).await?;
        Ok(n > 0)
    }

    async fn begin_pass(&self, start: &PassStart) -> Result<i64> {
        let mut c = Single::acquire(&self.pool).await?;
        let id = sql::begin_pass::<Sqlite>(c.conn(), start).await?;
        c.done();
        Ok(id)
    }

    async fn finish_pass(&self, id: i64, counts: &PassCounts, error: Option<&str>) -> Result<()> {
        let mut c = Single::acquire(&self.pool).await?;
        sql::finish_pass::<Sqlite>(c.conn(), id, counts, error).await?;
        c.done();
        Ok(())
    }

    async fn pass_history(&self) -> Result<PassHistory> {
        let mut out = PassHistory { real_now: crate::clock::real_now(), last: None, last_ok: None };
        for (slot, filter) in [(&mut out.last, ""), (&mut out.last_ok, PASS_OK)] {
            let row = sqlx::query(&sql::latest_pass(filter)).fetch_optional(&self.pool).await?;
            *slot = row.map(|r| pass_record(&r)).transpose()?;
        }
        Ok(out)
    }

    async fn retry_failed(&self, select: &RetrySelect, now: DateTime<Utc>) -> Result<Retried> {
        let mut w = Writer::begin(&self.pool).await?;
        let retried = sql::retry_failed::<Sqlite>(w.conn(), select, now).await?;
        w.commit().await?;
        Ok(retried)
    }

    async fn prune(&self, cut: &PruneCut, dry_run: bool) -> Result<Pruned> {
        fn bind<'q>(
            q: &'q str,
            cut: &PruneCut,
        ) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
            sqlx::query(q)
                .bind(ts(cut.before))
                .bind(cut.dunning_due_until.to_string())
                .bind(cut.visit_before.to_string())
        }
        let keys = prune_keys(
            "CAST(substr(m.dedup_key, 11 + instr(substr(m.dedup_key, 11), ':')) AS INTEGER)",
            "unixepoch(COALESCE(s.next_run_at, s.scheduled_at))",
        );
        let mut w = Writer::begin(&self.pool).await?;
        let [attempts, messages] = prune_deletes(&keys);
        let attempts = bind(&attempts, cut).execute(w.conn()).await?.rows_affected();
        let messages = bind(&messages, cut).execute(w.conn()).await?.rows_affected();
        let real = crate::clock::real_now();
        let passes_before = real
            .checked_sub_signed(chrono::Duration::days(i64::from(cut.passes_days)))
            .unwrap_or(real);
        let passes = sqlx::query("DELETE FROM passes WHERE started_at < ?1")
            .bind(ts(passes_before))
            .execute(w.conn())
            .await?
            .rows_affected();
        if dry_run {
            // Dropping the writer rolls the transaction back.
            drop(w);
        } else {
            w.commit().await?;
        }
        Ok(Pruned { messages, attempts, passes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_timestamps_are_fixed_width_and_sort_as_time() {
        let t: DateTime<Utc> = "2025-11-18T02:00:00Z".parse().unwrap();
        assert_eq!(ts(t), "2025-11-18T02:00:00.000Z");
        let far = DateTime::<Utc>::MAX_UTC;
        assert_eq!(ts(far), "9999-12-31T23:59:59.999Z");
        assert!(ts(far) > ts(t));
        assert_eq!(ts(far).len(), ts(t).len());
        assert_eq!(ts(DateTime::<Utc>::MIN_UTC), "0000-01-01T00:00:00.000Z");
    }

    use chrono_tz::Asia::Jakarta;
    use sqlx::Connection as _;

    /// An expression of column `v`, evaluated by SQLite for one value written as SQL.
    async fn eval<T>(conn: &mut SqliteConnection, expr: &str, value: &str) -> T
    where
        T: for<'r> sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite> + Send + Unpin,
    {
        sqlx::query_scalar(&format!("SELECT {expr} FROM (SELECT {value} AS v)"))
            .fetch_one(conn)
            .await
            .unwrap_or_else(|e| panic!("{value}: {e}"))
    }

    async fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("test.db").display());
        let store = SqliteStore::connect(&url, Jakarta).await.unwrap();
        store.migrate().await.unwrap();
        (dir, store)
    }

    /// What SQLite plans for `sql`: its steps, each in its own words.
    async fn plan(store: &SqliteStore, sql: &str) -> Vec<String> {
        let explain = format!("EXPLAIN QUERY PLAN {sql}");
        let rows = sqlx::query(&explain).bind("t").bind("[]").fetch_all(&store.pool).await.unwrap();
        rows.iter().map(|r| r.get::<String, _>("detail")).collect()
    }

    #[tokio::test]
    async fn claims_by_id_and_result_writes_are_driven_by_their_batch_even_after_analyze() {
        let (dir, mut store) = store().await;
        for analyzed in [false, true] {
            if analyzed {
                // As an operator's `ANALYZE` on an idle outbox leaves it: every index "empty".
                // A connection reads the statistics when it opens, as each pass's do.
                sqlx::query("ANALYZE").execute(&store.pool).await.unwrap();
                store.pool.close().await;
                let url = format!("sqlite:{}", dir.path().join("test.db").display());
                store = SqliteStore::connect(&url, Jakarta).await.unwrap();
            }
            let (claim, scheduled) = (claim_ids_sql(), record_scheduled());
            for sql in [&claim, RECORD_RESULTS, RECORD_FALLBACKS, &scheduled] {
                let steps = plan(&store, sql).await;
                let shown = format!("analyzed: {analyzed}\n{sql}\n{steps:#?}");
                // The outbox and the scheduled messages are only ever looked up by id, once
                // per row of the batch; the batch is what is scanned.
                for step in &steps {
                    let table = step.split_whitespace().nth(1).unwrap_or_default();
                    if ["messages", "m", "scheduled_messages"].contains(&table) {
                        assert!(step.contains("INTEGER PRIMARY KEY (rowid=?)"), "{shown}");
                    }
                }
                assert!(steps.iter().any(|s| s.contains("VIRTUAL TABLE")), "{shown}");
            }
        }
    }

    #[tokio::test]
    async fn the_real_clock_in_sql_is_the_text_ts_writes_and_compares_with_it() {
        let mut conn = SqliteConnection::connect("sqlite::memory:").await.unwrap();
        let before = ts(crate::clock::real_now());
        let sql: String = eval(&mut conn, Sqlite::REAL_NOW, "1").await;
        let after = ts(crate::clock::real_now());
        assert_eq!(sql.len(), before.len(), "{sql} against {before}");
        assert!(sql.ends_with('Z') && sql.as_bytes()[10] == b'T', "{sql}");
        // Both read the host's clock to the millisecond, so text order is time order.
        assert!(before <= sql && sql <= after, "{before} <= {sql} <= {after}");
        assert_eq!(DateTime::parse_from_rfc3339(&sql).map(|t| ts(t.to_utc())), Ok(sql));
    }

    #[tokio::test]
    async fn sql_reads_an_input_date_only_where_rust_reads_it_the_same() {
        let mut conn = SqliteConnection::connect("sqlite::memory:").await.unwrap();
        for value in
            ["'2025-11-18'", "'2025-11-18 09:00:00'", "'2025-11-18T23:59:59.999'", "'2025-11-18 '"]
        {
            assert!(!eval::<bool>(&mut conn, &odd_date("v"), value).await, "{value}");
            let sql: String = eval(&mut conn, "date(v)", value).await;
            let text: String = eval(&mut conn, "v", value).await;
            assert_eq!(dates::local_date(&text, Jakarta).map(|d| d.to_string()), Ok(sql));
        }
        // Offsets in any spelling (date() gives their UTC date), impossible days (date() keeps
        // or rolls them), Julian day numbers, and what is no date at all: Rust reads them.
        for value in [
            "'2025-11-18T01:00:00+07:00'",
            "'2025-11-18T01:00:00+0700'",
            "'2025-11-18 01:00:00 +07:00'",
            "'2025-11-17 20:00:00 Z'",
            "'2025-11-17T20:00:00z'",
            "'2025-02-30'",
            "'2025-11-31'",
            "'2460997.5'",
            "2460997.5",
            "20251118",
            "''",
            "'tomorrow'",
            "'2025-11-18x'",
            "X'ff'",
        ] {
            assert!(eval::<bool>(&mut conn, &odd_date("v"), value).await, "{value}");
        }
    }

    #[tokio::test]
    async fn scheduled_times_sql_cannot_read_are_read_in_rust_and_the_rest_reported() {
        let (_dir, store) = store().await;
        sqlx::raw_sql(
            "INSERT INTO scheduled_messages (id, scheduled_at, next_run_at) VALUES \
             (1, '2025-11-17 08:00:00 +0700', NULL), (2, '2460996.5', NULL), \
             (3, 'tomorrow', '2025-11-17 08:00:00'), (4, '2025-11-17 08:00:00', NULL), \
             (5, '2025-11-17 10:00:00 +0700', NULL)",
        )
        .execute(store.pool())
        .await
        .unwrap();
        let now = "2025-11-17T02:00:00Z".parse().unwrap();
        let due = store.due_scheduled(now, 0, 100).await.unwrap();
        assert_eq!(due.iter().map(|d| d.id).collect::<Vec<_>>(), [1, 4]);
        let scan = store.scan_inputs().await.unwrap();
        let bad: Vec<_> = scan.bad.iter().map(|b| (b.id, b.column)).collect();
        assert_eq!(bad, [(2, "scheduled_at"), (3, "scheduled_at")]);
    }

    #[tokio::test]
    async fn a_scheduled_text_that_is_not_text_fails_naming_the_scheduled_row() {
        let (_dir, store) = store().await;
        sqlx::raw_sql(
            "INSERT INTO messages (kind, subject_id, dedup_key, channel, body, next_attempt_at) \
             VALUES ('scheduled', 9, 'scheduled:9:x', 'whatsapp', X'ff', '2000-01-01T00:00:00.000Z')",
        )
        .execute(store.pool())
        .await
        .unwrap();
        let route = Route::of(ChannelKind::WhatsApp);
        let request = ClaimRequest {
            route: &route,
            limit: 10,
            token: "t",
            now: "2025-11-17T02:00:00Z".parse().unwrap(),
            lease: Duration::from_secs(60),
            only_scheduled: false,
        };
        let claimed = store.claim(&request).await.unwrap();
        let Err((_, reason)) = &claimed[0].row else { panic!("read: {:?}", claimed[0].row) };
        assert!(
            reason.ends_with("scheduled_messages 9 body: x'ff' (1 bytes) is not text"),
            "{reason}"
        );
    }

    #[test]
    fn the_odd_date_expression_is_the_one_the_indexes_use() {
        let migration =
            include_str!("../../migrations/sqlite/20251211174213_reindex_odd_input_dates.sql");
        for column in ["next_visit_date", "last_visit_date"] {
            assert!(migration.contains(&odd_date(column).replace("    ", "")), "{column}");
        }
        let migration =
            include_str!("../../migrations/sqlite/20261202040000_odd_due_without_not_null.sql");
        assert!(migration.contains(&odd_date_value("due_date").replace("    ", "")));
    }

    #[tokio::test]
    async fn the_input_scan_reads_the_odd_date_indexes_not_the_tables() {
        let (_dir, store) = store().await;
        for (sql, indexes) in [
            (odd_invoices_sql(), &["invoices_odd_due"][..]),
            (odd_vehicles_sql(), &["vehicles_odd_next", "vehicles_odd_last"][..]),
        ] {
            let steps = plan(&store, &sql).await.join("\n");
            for index in indexes {
                assert!(steps.contains(&format!("INDEX {index}")), "{sql}\n{steps}");
            }
        }
    }
}
