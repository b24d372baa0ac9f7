//! Storage: the `Store` trait and its two implementations, chosen by the URL's scheme. This is
//! the only place SQL lives. The same contract tests run against both backends.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;

use crate::domain::channel::{ChannelKind, Route};
use crate::domain::outbox::{Kind, Outcome};

pub mod postgres;
pub mod sql;
pub mod sqlite;

pub use sql::OPEN_MESSAGES;

/// A storage failure. Its `Display` is the whole reason, once: the driver's error is not also
/// given as `source()`, because sqlx's own messages already repeat their causes, and an error
/// chain printed as `what: why` would say everything two or three times.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}", describe(.0))]
    Database(sqlx::Error),
    #[error("migrations failed: {}", describe_migrate(.0))]
    Migrate(sqlx::migrate::MigrateError),
    #[error("{0}")]
    Other(String),
}

impl StoreError {
    /// The connection itself failed (the server closed it, restarted, or the socket broke), as
    /// opposed to a statement the database refused. The same statement on a new connection may
    /// well succeed. Disk, lock and constraint errors are never this.
    pub fn is_connection_lost(&self) -> bool {
        match self {
            Self::Database(sqlx::Error::Io(_)) => true,
            Self::Database(sqlx::Error::Database(db)) => db.code().is_some_and(|code| {
                // PostgreSQL's class 08 (connection exception), 57P01 (terminated by an
                // administrator), 57P02 (crash shutdown) and 57P03 (cannot connect now).
                code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03")
            }),
            _ => false,
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        Self::Database(e)
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Self::Migrate(e)
    }
}

/// What went wrong, without sqlx's "error returned from database: (code: 14)" framing.
fn describe(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => db.message().to_string(),
        sqlx::Error::Io(io) => io.to_string(),
        sqlx::Error::Tls(tls) => format!("TLS: {tls}"),
        sqlx::Error::Configuration(c) => format!("bad connection settings: {c}"),
        sqlx::Error::PoolTimedOut => "timed out waiting for a database connection".into(),
        sqlx::Error::Migrate(m) => describe_migrate(m),
        other => other.to_string(),
    }
}

fn describe_migrate(e: &sqlx::migrate::MigrateError) -> String {
    use sqlx::migrate::MigrateError;
    match e {
        MigrateError::Execute(inner) => describe(inner),
        MigrateError::ExecuteMigration(inner, version) => {
            format!("migration {version}: {}", describe(inner))
        }
        other => other.to_string(),
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Opens the database named by `url` (`sqlite:…` or `postgres://…`). `tz` is the zone in which
/// SQLite's text dates are read (`REMINDER_TIMEZONE`).
pub async fn connect(url: &str, tz: Tz) -> Result<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::connect(url, tz).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PgStore::connect(url).await?))
    } else {
        Err(StoreError::Other(
            "DATABASE_URL must start with sqlite: or postgres:// (or postgresql://)".into(),
        ))
    }
}

/// One outbox row that generation created (or, in a dry run, would create).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GenRow {
    pub id: Option<i64>,
    pub kind: String,
    pub subject_id: Option<i64>,
    pub stage: Option<String>,
    pub channel: String,
    pub status: String,
    pub error: Option<String>,
    pub dedup_key: String,
    pub contact_id: Option<i64>,
    pub event_date: Option<NaiveDate>,
    pub connection: Option<String>,
}

/// What one generation statement found and queued.
#[derive(Debug, Clone, Default)]
pub struct Generated {
    /// Subjects currently in this rule's window, queued before or not.
    pub found: u64,
    /// Rows created now (in a dry run: rows that would be).
    pub queued: u64,
    /// Of those, rows created `failed` (missing contact, unknown channel) or `skipped`.
    pub failed: u64,
    pub skipped: u64,
    /// The first rows created, as many as the caller asked to keep.
    pub rows: Vec<GenRow>,
}

impl Generated {
    /// Adds another statement's result (scheduled messages come in pages).
    pub fn absorb(&mut self, other: Generated) {
        self.found += other.found;
        self.queued += other.queued;
        self.failed += other.failed;
        self.skipped += other.skipped;
        self.rows.extend(other.rows);
    }
}

/// A scheduled message whose run time has come.
#[derive(Debug, Clone)]
pub struct DueScheduled {
    pub id: i64,
    pub scheduled_at: DateTime<Utc>,
    pub run_at: DateTime<Utc>,
    pub recurrence: String,
    /// The run time exactly as stored, for the compare-and-set (SQLite keeps the app's text).
    pub stored_run_at: Option<String>,
}

/// Queue one occurrence and move the series on, compare-and-set on `run_at` as read.
#[derive(Debug, Clone)]
pub struct ScheduledAdvance {
    pub id: i64,
    /// The run time as read, for the compare-and-set.
    pub run_at: DateTime<Utc>,
    pub stored_run_at: Option<String>,
    /// `None` ends the series (a one-off, or a bad recurrence).
    pub next_run_at: Option<DateTime<Utc>>,
    pub dedup_key: String,
    pub stage: String,
}

/// A value in an input table that no rule can use: the row is reported, never silently lost.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BadValue {
    pub table: &'static str,
    pub id: i64,
    pub column: &'static str,
    /// The value as found, escaped and shortened.
    pub value: String,
    pub problem: String,
}

impl std::fmt::Display for BadValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}: {}", self.table, self.id, self.column, self.problem)
    }
}

/// Longest part of a bad value kept in a reason.
const SHOWN_CHARS: usize = 60;

impl BadValue {
    pub fn new(
        table: &'static str,
        id: i64,
        column: &'static str,
        value: &str,
        problem: impl Into<String>,
    ) -> Self {
        Self { table, id, column, value: shown(value), problem: problem.into() }
    }
}

/// A value as an operator can read it in one line: control characters escaped, cut short.
pub fn shown(value: &str) -> String {
    let mut out: String = value.chars().take(SHOWN_CHARS).flat_map(char::escape_debug).collect();
    if value.chars().count() > SHOWN_CHARS {
        out.push('…');
    }
    out
}

/// One input value, decoded on its own so that a bad one fails only what needs it.
pub type Cell<T> = std::result::Result<Option<T>, BadValue>;

/// Input rows whose dates the rules cannot compare in SQL, read once per pass (SQLite only:
/// PostgreSQL's typed columns refuse such values on insert).
#[derive(Debug, Clone, Default)]
pub struct InputScan {
    /// Unpaid invoices whose `due_date` carries an offset, read as a local date.
    pub invoice_due: Vec<(i64, NaiveDate)>,
    /// Vehicles whose visit date needed reading in Rust, as the local visit date.
    pub vehicle_visit: Vec<(i64, NaiveDate)>,
    /// Rows no rule can use, with the reason.
    pub bad: Vec<BadValue>,
}

/// What a claim asks for. `now` is the business clock; the lease runs on the store's real
/// clock (SPEC §10).
#[derive(Debug, Clone)]
pub struct ClaimRequest<'a> {
    pub route: &'a Route,
    pub limit: i64,
    pub token: &'a str,
    pub now: DateTime<Utc>,
    pub lease: Duration,
    /// Only scheduled messages (the rules' send window is closed).
    pub only_scheduled: bool,
}

/// The outbox columns of a claimed message: ours, typed.
#[derive(Debug, Clone)]
pub struct ClaimedRow {
    pub id: i64,
    pub kind: Kind,
    pub subject_id: Option<i64>,
    pub stage: Option<String>,
    pub event_date: Option<NaiveDate>,
    pub channel: ChannelKind,
    pub subject: Option<String>,
    pub body: Option<String>,
    pub media_url: Option<String>,
    /// The address stored on the row (test messages are addressed when queued).
    pub recipient: Option<String>,
    /// Requests made so far whose answer was recorded.
    pub attempts: i32,
    /// Passes that died holding this message (their lease ran out without a result).
    pub expired_leases: i32,
    pub contact_id: Option<i64>,
    /// The WhatsApp connection it goes through (`None` is the default one).
    pub connection: Option<String>,
}

/// The contact behind a message, as it is now.
#[derive(Debug, Clone)]
pub struct ContactRow {
    pub id: i64,
    pub name: Cell<String>,
    pub phone: Cell<String>,
    pub email: Cell<String>,
    pub telegram_chat_id: Cell<String>,
    /// The ordered channel preference, for fallback.
    pub channels: Cell<String>,
    pub opted_out: bool,
}

/// The invoice behind a dunning message, as it is now.
#[derive(Debug, Clone)]
pub struct InvoiceRow {
    pub id: i64,
    pub number: Cell<String>,
    pub amount: Cell<i64>,
    pub due_date: Cell<NaiveDate>,
    pub status: Cell<String>,
}

/// The vehicle behind a maintenance message, as it is now.
#[derive(Debug, Clone)]
pub struct VehicleRow {
    pub id: i64,
    pub plate_no: Cell<String>,
    /// `next_visit_date`, or `last_visit_date` + 4 months.
    pub visit_date: Cell<NaiveDate>,
}

/// The scheduled message behind an outbox row, as it is now: an edit, a cancel or a delete after
/// the occurrence was queued is honoured at send time.
#[derive(Debug, Clone)]
pub struct ScheduledRow {
    pub id: i64,
    pub status: Cell<String>,
    pub body: Cell<String>,
    pub caption: Cell<String>,
    pub media_url: Cell<String>,
    /// The channel spec (`whatsapp`, `whatsapp+email`, …).
    pub channel: Cell<String>,
    pub scheduled_at: Cell<DateTime<Utc>>,
    pub recurrence: Cell<String>,
}

/// A claimed message with what delivery needs to re-check and render it. A row whose own
/// columns cannot be read carries the reason instead, and is failed rather than lost.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub row: std::result::Result<ClaimedRow, (i64, String)>,
    pub contact: Option<ContactRow>,
    pub invoice: Option<InvoiceRow>,
    pub vehicle: Option<VehicleRow>,
    pub scheduled: Option<ScheduledRow>,
}

impl Claimed {
    pub fn id(&self) -> i64 {
        match &self.row {
            Ok(r) => r.id,
            Err((id, _)) => *id,
        }
    }
}

/// What writing a batch of outcomes did.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    /// Ids whose lease was lost: their result is kept in `delivery_attempts` only, marked late.
    pub lost: Vec<i64>,
    /// Channels that received new fallback rows.
    pub fallbacks: Vec<ChannelKind>,
}

/// A message queued directly rather than by a rule (`test-whatsapp`, `test-dunning`).
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub kind: Kind,
    pub subject_id: Option<i64>,
    pub stage: Option<String>,
    pub event_date: Option<NaiveDate>,
    pub dedup_key: String,
    pub contact_id: Option<i64>,
    pub channel: String,
    pub recipient: Option<String>,
    pub body: Option<String>,
}

/// A scheduled message to add (`schedule add`), checked.
#[derive(Debug, Clone)]
pub struct NewScheduled {
    pub contact_id: i64,
    pub channel: String,
    pub body: String,
    pub media_url: Option<String>,
    pub caption: Option<String>,
    pub scheduled_at: DateTime<Utc>,
    /// The first run, when the series' anchor has passed already.
    pub next_run_at: Option<DateTime<Utc>>,
    pub recurrence: String,
    pub connection: Option<String>,
    pub created_by: Option<String>,
}

/// What `schedule edit` changes, checked; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ScheduledEdit {
    pub body: Option<String>,
    pub channel: Option<String>,
    pub media_url: Option<Option<String>>,
    pub caption: Option<Option<String>>,
    pub connection: Option<Option<String>>,
    pub recurrence: Option<String>,
    /// A new time: the anchor, and the next run when the anchor has passed.
    pub timing: Option<(DateTime<Utc>, Option<DateTime<Utc>>)>,
    pub status: Option<String>,
}

/// A scheduled message as `schedule list` shows it, with its last delivery.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScheduledListing {
    pub id: i64,
    pub contact_id: Option<i64>,
    pub contact_name: Option<String>,
    pub channel: String,
    pub connection: Option<String>,
    pub body: String,
    pub media_url: Option<String>,
    pub caption: Option<String>,
    pub recurrence: String,
    pub status: String,
    /// When it goes out next, as stored (the app's own text on SQLite).
    pub next_run: Option<String>,
    /// The same, read as an instant; `None` when it cannot be read.
    pub next_run_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    pub message_id: Option<String>,
    pub sent_at: Option<String>,
    pub created_by: Option<String>,
}

/// A contact found or created by `test-dunning`.
#[derive(Debug, Clone)]
pub struct TestContact {
    pub id: i64,
    pub name: String,
    pub existed: bool,
}

/// Rate-limit slots reserved for one batch, timed on the store's real clock: the first slot
/// comes `first_in` after the reservation, then one every `interval_ns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotGrant {
    pub first_in: Duration,
    pub count: u32,
    pub interval_ns: i64,
    /// The limiter's next free slot after this grant (store clock, epoch ns), to give unused
    /// slots back.
    pub end_ns: i64,
}

impl SlotGrant {
    /// How long after the reservation slot `index` comes.
    pub fn offset(&self, index: u32) -> Duration {
        self.first_in
            + Duration::from_nanos(
                (self.interval_ns.max(0) as u64).saturating_mul(u64::from(index)),
            )
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StatusCount {
    pub kind: String,
    pub status: String,
    pub channel: String,
    pub count: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Failure {
    pub id: i64,
    pub kind: String,
    pub stage: Option<String>,
    pub channel: String,
    pub recipient: Option<String>,
    pub status: String,
    pub error: Option<String>,
    /// When it last changed: the latest attempt's time, else when it was generated.
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ChannelDown {
    pub channel: String,
    pub reason: String,
    pub since: DateTime<Utc>,
}

/// A route's shared state, as `status` shows it (`channel` is the route's key).
#[derive(Debug, Clone)]
pub struct SlotState {
    pub channel: String,
    /// How long until its rate limiter's next free slot (zero when free now).
    pub next_free_in: Duration,
    /// The calendar month its quota counts (`2025-11`), and what it used then.
    pub quota_month: Option<String>,
    pub quota_used: i64,
}

/// A pass as it starts: what `passes` records first.
#[derive(Debug, Clone)]
pub struct PassStart {
    /// `run`, `generate` or `send`.
    pub command: &'static str,
    pub host: String,
    pub pid: u32,
    /// The `--now` the pass evaluated, when it was given one.
    pub business_now: Option<DateTime<Utc>>,
}

/// What a pass did: its report's totals, as `passes` keeps them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PassCounts {
    pub generated: u64,
    pub sent: u64,
    pub failed: u64,
    pub retried: u64,
    /// Sent back to wait because the provider asked (rate limit) or the channel is down.
    pub deferred: u64,
    pub cancelled: u64,
    pub skipped: u64,
}

/// One recorded pass.
#[derive(Debug, Clone)]
pub struct PassRecord {
    pub id: i64,
    pub command: String,
    pub host: String,
    pub pid: i64,
    pub business_now: Option<DateTime<Utc>>,
    pub started_at: DateTime<Utc>,
    /// `None` while it runs, or when it never finished (killed, or its end could not be stored).
    pub finished_at: Option<DateTime<Utc>>,
    pub counts: PassCounts,
    pub error: Option<String>,
}

/// The latest passes and the real clock they are measured against (the database server's on
/// PostgreSQL).
#[derive(Debug, Clone)]
pub struct PassHistory {
    pub real_now: DateTime<Utc>,
    /// The latest pass to start.
    pub last: Option<PassRecord>,
    /// The latest pass that finished without an error.
    pub last_ok: Option<PassRecord>,
}

/// Which failed messages `retry` puts back.
#[derive(Debug, Clone)]
pub enum RetrySelect {
    Ids(Vec<i64>),
    /// Every failed message whose last attempt (or, failed when generated, whose creation) is
    /// at or after this instant.
    FailedSince(DateTime<Utc>),
}

/// What `retry` did.
#[derive(Debug, Clone, Default)]
pub struct Retried {
    /// The messages put back as `pending`: (id, channel, recipient).
    pub retried: Vec<(i64, String, Option<String>)>,
    /// Named messages that were not put back, and why.
    pub refused: Vec<(i64, String)>,
}

/// What `prune` may delete: finished messages whose occurrence no pass can generate again,
/// last touched before `before` (business clock), and passes that started more than
/// `passes_days` days ago (real clock).
#[derive(Debug, Clone)]
pub struct PruneCut {
    pub before: DateTime<Utc>,
    pub passes_days: u32,
    /// Dunning occurrences whose due date is on or before this local date: every stage of
    /// them has ended.
    pub dunning_due_until: NaiveDate,
    /// Maintenance occurrences whose visit date is before this local date (today).
    pub visit_before: NaiveDate,
}

/// What `prune` deleted (or, on a dry run, would delete).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Pruned {
    pub messages: u64,
    pub attempts: u64,
    pub passes: u64,
}

#[derive(Debug, Clone, Default)]
pub struct StatusData {
    pub counts: Vec<StatusCount>,
    pub failures: Vec<Failure>,
    pub down: Vec<ChannelDown>,
    /// Pending messages whose time has come, per channel.
    pub due: Vec<(String, i64)>,
    pub slots: Vec<SlotState>,
    /// Input rows no rule can use.
    pub bad_inputs: Vec<BadValue>,
}

/// Demo rows, dated by the caller (see `crate::seed`).
#[derive(Debug, Clone, Default)]
pub struct DemoData {
    pub contacts: Vec<DemoContact>,
    pub invoices: Vec<DemoInvoice>,
    pub vehicles: Vec<DemoVehicle>,
    pub scheduled: Vec<DemoScheduled>,
}

#[derive(Debug, Clone)]
pub struct DemoContact {
    pub key: String,
    pub name: String,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub telegram_chat_id: Option<String>,
    pub channels: String,
}

#[derive(Debug, Clone)]
pub struct DemoInvoice {
    pub key: String,
    pub contact_key: String,
    pub number: String,
    pub amount: i64,
    pub due_date: NaiveDate,
}

#[derive(Debug, Clone)]
pub struct DemoVehicle {
    pub key: String,
    pub contact_key: String,
    pub plate_no: String,
    pub last_visit_date: NaiveDate,
    pub next_visit_date: Option<NaiveDate>,
}

#[derive(Debug, Clone)]
pub struct DemoScheduled {
    pub key: String,
    pub contact_key: String,
    pub channel: String,
    pub body: String,
    pub scheduled_at: DateTime<Utc>,
    pub recurrence: String,
}

/// How many demo rows `seed` added (rows already there are left alone).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct SeedCounts {
    pub contacts: u64,
    pub invoices: u64,
    pub vehicles: u64,
    pub scheduled: u64,
    pub removed: u64,
}

/// An input table that `import` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportTable {
    Contacts,
    Invoices,
    Vehicles,
    Scheduled,
}

impl ImportTable {
    /// The SQL table.
    pub fn table(self) -> &'static str {
        match self {
            Self::Contacts => "contacts",
            Self::Invoices => "invoices",
            Self::Vehicles => "vehicles",
            Self::Scheduled => "scheduled_messages",
        }
    }

    /// The name the command line uses (`import scheduled …`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Contacts => "contacts",
            Self::Invoices => "invoices",
            Self::Vehicles => "vehicles",
            Self::Scheduled => "scheduled",
        }
    }

    /// One row of it, in a sentence.
    pub fn row(self) -> &'static str {
        match self {
            Self::Contacts => "contact",
            Self::Invoices => "invoice",
            Self::Vehicles => "vehicle",
            Self::Scheduled => "scheduled message",
        }
    }
}

/// The values of one column for every row of a batch, typed as the table stores them.
/// Column-major, so that PostgreSQL binds each as one array.
#[derive(Debug, Clone, PartialEq)]
pub enum ImportValues {
    Text(Vec<Option<String>>),
    Int(Vec<Option<i64>>),
    Date(Vec<Option<NaiveDate>>),
    Instant(Vec<Option<DateTime<Utc>>>),
}

/// One column an import writes.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportColumn {
    /// A column of the table, from the import's fixed list (never a name read from a file).
    pub name: &'static str,
    pub values: ImportValues,
    /// For a value derived from other columns (`next_run_at`): on update it is written only
    /// when one of these changed, and it is not itself compared.
    pub follows: &'static [&'static str],
}

/// Checked rows, upserted together by `ref`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportBatch {
    pub refs: Vec<String>,
    /// Explicit ids, when the file has an id column (then every row has one).
    pub ids: Option<Vec<i64>>,
    /// The `ref` of the contact each row belongs to (invoices, vehicles, scheduled messages).
    pub contact_refs: Option<Vec<String>>,
    pub columns: Vec<ImportColumn>,
}

impl ImportBatch {
    pub fn len(&self) -> usize {
        self.refs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.refs.is_empty()
    }
}

/// What an import wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ImportCounts {
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
}

/// A row already in the table, as an import checks against it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedRow {
    pub id: i64,
    /// Scheduled messages: the time as stored, when it reads as one.
    pub scheduled_at: Option<DateTime<Utc>>,
}

/// What the table holds of the refs and ids a batch of rows names.
#[derive(Debug, Clone, Default)]
pub struct ImportLookup {
    pub by_ref: std::collections::HashMap<String, ImportedRow>,
    /// Ids that are taken, with the `ref` of the row that has each (`None`: a row written by an
    /// app, not imported).
    pub by_id: std::collections::HashMap<i64, Option<String>>,
}

/// The batches of one import, read from the file as the store writes them. An `Err` (the file
/// changed, or cannot be read again) rolls the whole import back.
pub type ImportSource<'a> =
    dyn Iterator<Item = std::result::Result<ImportBatch, String>> + Send + 'a;

#[async_trait]
pub trait Store: Send + Sync {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;

    /// Applies pending migrations; safe when several processes start at once.
    async fn migrate(&self) -> Result<()>;

    /// Input rows whose dates need reading outside SQL, and rows no rule can use.
    async fn scan_inputs(&self) -> Result<InputScan>;

    /// Queues dunning stage `stage` for unpaid invoices due within `due` (inclusive), keeping
    /// up to `keep` of the new rows in the result.
    async fn generate_dunning(
        &self,
        stage: &str,
        due: (NaiveDate, NaiveDate),
        scan: &InputScan,
        now: DateTime<Utc>,
        dry_run: bool,
        keep: usize,
    ) -> Result<Generated>;

    /// Queues a maintenance reminder for vehicles whose next visit falls within `visit`.
    async fn generate_maintenance(
        &self,
        visit: (NaiveDate, NaiveDate),
        scan: &InputScan,
        now: DateTime<Utc>,
        dry_run: bool,
        keep: usize,
    ) -> Result<Generated>;

    /// Active scheduled messages whose run time is at or before `now`, by id after `after_id`.
    async fn due_scheduled(
        &self,
        now: DateTime<Utc>,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<DueScheduled>>;

    /// Queues each occurrence and advances its series, in one transaction.
    async fn queue_scheduled(
        &self,
        advances: &[ScheduledAdvance],
        now: DateTime<Utc>,
        dry_run: bool,
        keep: usize,
    ) -> Result<Generated>;

    /// Cancels queued dunning messages whose invoice is paid or cancelled.
    async fn cancel_settled(&self, now: DateTime<Utc>, dry_run: bool) -> Result<Vec<GenRow>>;

    /// Reserves up to `count` send slots of `interval_ns` on a route, none later than
    /// `horizon` from now on the store's clock. Shared by every pass on this database.
    async fn reserve_slots(
        &self,
        route: &Route,
        count: u32,
        interval_ns: i64,
        horizon: Duration,
    ) -> Result<Option<SlotGrant>>;

    /// Gives back the last `unused` slots of a grant, if nobody reserved after it.
    async fn return_slots(&self, route: &Route, grant: SlotGrant, unused: u32) -> Result<()>;

    /// Reserves up to `want` sends of a route's monthly quota `quota` in `month` (`2025-11`);
    /// returns how many were granted. Shared by every pass on this database.
    async fn reserve_quota(&self, route: &Route, month: &str, quota: u64, want: u32)
        -> Result<u32>;

    /// Gives back reserved sends that did not go out.
    async fn return_quota(&self, route: &Route, month: &str, unused: u32) -> Result<()>;

    /// Due WhatsApp messages per connection (`None` is the default one).
    async fn due_by_connection(&self, now: DateTime<Utc>) -> Result<Vec<(Option<String>, u64)>>;

    /// Claims up to `limit` due messages of a channel for this pass: pending ones whose time
    /// has come on the business clock, and ones whose lease ran out on the store's clock.
    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Vec<Claimed>>;

    /// Claims the given messages now, whatever their due time (the test commands).
    async fn claim_ids(&self, ids: &[i64], token: &str, lease: Duration) -> Result<Vec<Claimed>>;

    /// Writes outcomes back, only where this pass still holds the claim.
    async fn record(&self, token: &str, outcomes: &[Outcome]) -> Result<Recorded>;

    /// Marks a route down (with the reason) or up (`None`).
    async fn set_channel_down(
        &self,
        route: &Route,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<()>;

    /// Due messages of a channel, without claiming them.
    async fn preview_due(
        &self,
        channel: ChannelKind,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<GenRow>>;

    /// How many messages of a route are due now.
    async fn count_due(&self, route: &Route, now: DateTime<Utc>) -> Result<u64>;

    /// What delivery would read of rows a dry run would create, to render them (`id` of each is
    /// its index in `rows` unless it has one).
    async fn context_of(&self, rows: &[GenRow]) -> Result<Vec<Claimed>>;

    /// Counts, latest failures, channel health and rate limiters.
    async fn status(&self, now: DateTime<Utc>, failures: i64) -> Result<StatusData>;

    /// Inserts messages (`ON CONFLICT DO NOTHING`) and returns the new ids.
    async fn insert_messages(&self, rows: &[NewMessage], now: DateTime<Utc>) -> Result<Vec<i64>>;

    /// The test contact with this email address, or a new one named `name`, marked as a test
    /// contact: a customer with the same email is never touched. Its phone becomes `phone` and
    /// email then WhatsApp its channels. With `dry_run`, only looks it up.
    async fn test_contact(
        &self,
        name: &str,
        email: &str,
        phone: &str,
        dry_run: bool,
    ) -> Result<Option<TestContact>>;

    /// A new unpaid test invoice, which the rules never remind about; returns its id.
    async fn create_test_invoice(
        &self,
        contact_id: i64,
        number: &str,
        amount: i64,
        due: NaiveDate,
    ) -> Result<i64>;

    /// Loads demo rows; with `reset`, removes earlier demo rows and their messages first.
    async fn seed(&self, demo: &DemoData, reset: bool) -> Result<SeedCounts>;

    /// The contacts among `ids` that exist, with their names.
    async fn contact_names(&self, ids: &[i64]) -> Result<Vec<(i64, String)>>;

    /// Adds scheduled messages, in one transaction; returns their ids in order.
    async fn add_scheduled(&self, rows: &[NewScheduled]) -> Result<Vec<i64>>;

    /// Scheduled messages, newest first, optionally one contact's or one user's.
    async fn list_scheduled(
        &self,
        id: Option<i64>,
        contact: Option<i64>,
        created_by: Option<&str>,
    ) -> Result<Vec<ScheduledListing>>;

    /// Changes a scheduled message; queued occurrences that have not gone out follow a new
    /// time.
    async fn edit_scheduled(&self, id: i64, edit: &ScheduledEdit) -> Result<()>;

    /// Cancels a scheduled message and what it has queued that has not gone out; returns how
    /// many queued messages were cancelled.
    async fn cancel_scheduled(&self, id: i64, by: Option<&str>) -> Result<u64>;
    /// The rows of `table` that have one of `refs`, and those that have one of `ids`.
    async fn import_lookup(
        &self,
        table: ImportTable,
        refs: &[String],
        ids: &[i64],
    ) -> Result<ImportLookup>;

    /// Upserts every batch by `ref` in one transaction: all of them, or on any error none. A
    /// row whose values are all as stored is left alone (counted unchanged). After explicit
    /// ids, the table's id sequence is moved past them (PostgreSQL), so that an app's next
    /// insert without an id does not collide.
    async fn import(
        &self,
        table: ImportTable,
        batches: &mut ImportSource<'_>,
    ) -> Result<ImportCounts>;

    /// Whether any message is pending or being sent: with none, delivery has nothing to claim
    /// and opens no lane (an idle tick then costs one connection, not one per channel).
    async fn has_open_messages(&self) -> Result<bool>;

    /// Records that a pass started (on the real clock); returns its id.
    async fn begin_pass(&self, start: &PassStart) -> Result<i64>;

    /// Records how the pass ended (on the real clock).
    async fn finish_pass(&self, id: i64, counts: &PassCounts, error: Option<&str>) -> Result<()>;

    /// The latest pass, and the latest that finished well.
    async fn pass_history(&self) -> Result<PassHistory>;

    /// Puts failed messages back as `pending` with fresh attempts at `now`, recording the
    /// change in `delivery_attempts`. A message whose occurrence was sent, or is queued, on
    /// another channel is not put back: it would reach the contact twice.
    async fn retry_failed(&self, select: &RetrySelect, now: DateTime<Utc>) -> Result<Retried>;

    /// Deletes what `cut` allows (in one transaction); a dry run counts it and deletes nothing.
    async fn prune(&self, cut: &PruneCut, dry_run: bool) -> Result<Pruned>;
}

/// A count as the database keeps it.
pub(crate) fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A pass row, on either backend.
pub(crate) fn pass_record<R>(r: &R) -> Result<PassRecord>
where
    R: sqlx::Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'c> i64: sqlx::Decode<'c, R::Database> + sqlx::Type<R::Database>,
    for<'c> String: sqlx::Decode<'c, R::Database> + sqlx::Type<R::Database>,
    for<'c> DateTime<Utc>: sqlx::Decode<'c, R::Database> + sqlx::Type<R::Database>,
{
    let n = |c: &str| -> Result<u64> { Ok(u64::try_from(r.try_get::<i64, _>(c)?).unwrap_or(0)) };
    Ok(PassRecord {
        id: r.try_get("id")?,
        command: r.try_get("command")?,
        host: r.try_get("host")?,
        pid: r.try_get("pid")?,
        business_now: r.try_get("business_now")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
        counts: PassCounts {
            generated: n("generated")?,
            sent: n("sent")?,
            failed: n("failed")?,
            retried: n("retried")?,
            deferred: n("deferred")?,
            cancelled: n("cancelled")?,
            skipped: n("skipped")?,
        },
        error: r.try_get("error")?,
    })
}

/// Another row of a retry candidate's occurrence: id, channel, status, origin.
pub(crate) type Sibling = (i64, String, String, String);

/// The rows, sent or queued, of the retry candidates' occurrences: dedup key, id, channel,
/// status, origin; read in one statement for all candidates.
pub(crate) type Standing = (String, i64, String, String, String);

/// The standing rows of `c`'s occurrence other than `c` itself, in id order.
pub(crate) fn beside(standing: &[Standing], c: &RetryCandidate) -> Vec<Sibling> {
    let mut rows: Vec<Sibling> = standing
        .iter()
        .filter(|s| s.0 == c.dedup_key && s.1 != c.id)
        .map(|s| (s.1, s.2.clone(), s.3.clone(), s.4.clone()))
        .collect();
    rows.sort_by_key(|r| r.0);
    rows
}

/// A retry candidate as read back.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct RetryCandidate {
    pub id: i64,
    pub status: String,
    pub dedup_key: String,
    pub channel: String,
    pub origin: String,
    pub recipient: Option<String>,
}

/// Decides which candidates `retry` puts back. `others` gives, for a candidate, the other rows
/// of its occurrence that are sent or queued (id, channel, status, origin). Rows generated
/// together for `+` (origin `rule`) go out alongside each other; any other row of the
/// occurrence stands for it, so a failed row is not put back next to it. Of several failed
/// rows of one occurrence picked at once, the rule's rows go back and a fallback does not.
pub(crate) fn retry_plan<'a>(
    named: Option<&[i64]>,
    candidates: &'a [RetryCandidate],
    others: &dyn Fn(&RetryCandidate) -> Vec<Sibling>,
) -> (Vec<&'a RetryCandidate>, Vec<(i64, String)>) {
    let mut refused = Vec::new();
    if let Some(ids) = named {
        for id in ids {
            if !candidates.iter().any(|c| c.id == *id) {
                refused.push((*id, format!("there is no message {id}")));
            }
        }
    }
    let mut chosen: Vec<&RetryCandidate> = Vec::new();
    for c in candidates {
        if c.status != "failed" {
            refused.push((c.id, format!("message {} is {}, not failed", c.id, c.status)));
            continue;
        }
        let standing = others(c)
            .into_iter()
            .find(|(_, _, _, origin)| !(c.origin == "rule" && origin == "rule"));
        if let Some((id, channel, status, _)) = standing {
            let what = if status == "sent" { "was sent" } else { "is queued" };
            refused.push((
                c.id,
                format!(
                    "message {}: its reminder {what} on {channel} (message {id}); putting it \
                     back would reach the contact twice",
                    c.id
                ),
            ));
            continue;
        }
        let rival = chosen
            .iter()
            .find(|o| o.dedup_key == c.dedup_key && !(o.origin == "rule" && c.origin == "rule"));
        if let Some(o) = rival {
            refused.push((
                c.id,
                format!(
                    "message {}: its reminder goes back on {} (message {}) instead",
                    c.id, o.channel, o.id
                ),
            ));
            continue;
        }
        chosen.push(c);
    }
    refused.sort_by_key(|r| r.0);
    (chosen, refused)
}

/// The columns an import statement inserts, in order: `ref`, then `id` and `contact_id` when the
/// batch has them, then the batch's own columns.
pub(crate) fn import_columns(batch: &ImportBatch) -> Vec<&'static str> {
    let mut cols = vec!["ref"];
    if batch.ids.is_some() {
        cols.push("id");
    }
    if batch.contact_refs.is_some() {
        cols.push("contact_id");
    }
    cols.extend(batch.columns.iter().map(|c| c.name));
    cols
}

/// The `ON CONFLICT (ref)` clause of an import, which both dialects accept: a row already
/// imported is updated only where a value differs (so `RETURNING` names exactly the rows that
/// changed), and a derived column only when what it follows changed. The id is never updated:
/// the check refuses a file that would change it.
pub(crate) fn import_conflict(table: ImportTable, batch: &ImportBatch) -> String {
    let t = table.table();
    let mut compared: Vec<&str> = Vec::new();
    if batch.contact_refs.is_some() {
        compared.push("contact_id");
    }
    compared.extend(batch.columns.iter().filter(|c| c.follows.is_empty()).map(|c| c.name));
    if compared.is_empty() {
        return "ON CONFLICT (ref) DO NOTHING".to_string();
    }
    let changed = |cols: &[&str]| {
        cols.iter()
            .map(|c| format!("{t}.{c} IS DISTINCT FROM excluded.{c}"))
            .collect::<Vec<_>>()
            .join(" OR ")
    };
    let mut set: Vec<String> = compared.iter().map(|c| format!("{c} = excluded.{c}")).collect();
    for column in batch.columns.iter().filter(|c| !c.follows.is_empty()) {
        let follows: Vec<&str> =
            column.follows.iter().copied().filter(|f| compared.contains(f)).collect();
        if !follows.is_empty() {
            set.push(format!(
                "{0} = CASE WHEN {1} THEN excluded.{0} ELSE {t}.{0} END",
                column.name,
                changed(&follows)
            ));
        }
    }
    format!("ON CONFLICT (ref) DO UPDATE SET {} WHERE {}", set.join(", "), changed(&compared))
}

/// Counts one batch of an import. A row whose ref was there before is updated when the
/// statement returned it, else unchanged; any other returned row was inserted. A new row the
/// statement did not return lost its contact after the check (another process deleted it):
/// the import stops and rolls back rather than drop the row silently.
pub(crate) fn tally_import(
    refs: &[String],
    before: &std::collections::HashSet<String>,
    returned: &std::collections::HashSet<String>,
) -> Result<ImportCounts> {
    let mut counts = ImportCounts::default();
    for r in refs {
        match (before.contains(r), returned.contains(r)) {
            (true, true) => counts.updated += 1,
            (true, false) => counts.unchanged += 1,
            (false, true) => counts.inserted += 1,
            (false, false) => {
                return Err(StoreError::Other(format!(
                    "ref '{}' was not written: its contact was deleted while the file was \
                     imported; nothing was written",
                    shown(r)
                )))
            }
        }
    }
    Ok(counts)
}

impl std::ops::AddAssign for ImportCounts {
    fn add_assign(&mut self, other: Self) {
        self.inserted += other.inserted;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
    }
}

/// Carves a grant out of the limiter's state (store clock, epoch ns): slots start at the later
/// of its next free slot and now, one per interval, and none lies past the horizon.
pub(crate) fn slots(
    next_ns: i64,
    count: u32,
    interval_ns: i64,
    now_ns: i64,
    horizon: Duration,
) -> Option<SlotGrant> {
    let first_ns = next_ns.max(now_ns);
    let horizon_ns = now_ns.saturating_add(i64::try_from(horizon.as_nanos()).unwrap_or(i64::MAX));
    if count == 0 || interval_ns <= 0 || first_ns > horizon_ns {
        return None;
    }
    let room = (horizon_ns - first_ns) / interval_ns + 1;
    let count = i64::from(count).min(room) as u32;
    Some(SlotGrant {
        first_in: Duration::from_nanos((first_ns - now_ns) as u64),
        count,
        interval_ns,
        end_ns: first_ns.saturating_add(i64::from(count).saturating_mul(interval_ns)),
    })
}

/// A row a dry run would create, as a claim would see it (no outbox row behind it yet).
pub(crate) fn candidate(index: usize, r: &GenRow) -> Claimed {
    let row = (|| -> std::result::Result<ClaimedRow, String> {
        Ok(ClaimedRow {
            id: r.id.unwrap_or(i64::try_from(index).unwrap_or(0)),
            kind: r.kind.parse()?,
            subject_id: r.subject_id,
            stage: r.stage.clone(),
            event_date: r.event_date,
            channel: r.channel.parse()?,
            subject: None,
            body: None,
            media_url: None,
            recipient: None,
            attempts: 0,
            expired_leases: 0,
            contact_id: r.contact_id,
            connection: r.connection.clone(),
        })
    })();
    Claimed {
        row: row.map_err(|e| (r.id.unwrap_or(0), e)),
        contact: None,
        invoice: None,
        vehicle: None,
        scheduled: None,
    }
}

/// One outcome as the columns a result write sets: the same mapping for both backends.
#[derive(Debug, Clone)]
pub(crate) struct Written<'a> {
    pub id: i64,
    pub status: &'static str,
    pub attempts: i32,
    /// The attempt number kept in history: the one this outcome answers.
    pub attempt: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub error: Option<&'a str>,
    pub provider: Option<&'a str>,
    pub provider_message_id: Option<&'a str>,
    pub recipient: Option<&'a str>,
    pub subject: Option<&'a str>,
    pub body: Option<&'a str>,
    pub sent_at: Option<DateTime<Utc>>,
    pub label: Option<&'static str>,
    pub fallback: Option<&'static str>,
    pub channel: &'static str,
    pub at: DateTime<Utc>,
}

impl<'a> Written<'a> {
    pub fn from(o: &'a Outcome) -> Self {
        use crate::domain::outbox::Resolution;
        let request = o.request.as_ref();
        let (next_attempt_at, sent_at, provider_message_id) = match &o.resolution {
            Resolution::Retry { at, .. } => (Some(*at), None, None),
            Resolution::Sent { provider_message_id } => {
                (None, Some(o.at), provider_message_id.as_deref())
            }
            _ => (None, None, None),
        };
        Self {
            id: o.id,
            status: o.resolution.status().as_str(),
            attempts: o.attempts_after(),
            attempt: o.attempts + 1,
            next_attempt_at,
            error: o.resolution.reason(),
            provider: request.map(|r| r.provider.as_str()),
            provider_message_id,
            recipient: request.map(|r| r.recipient.as_str()),
            subject: request.and_then(|r| r.subject.as_deref()),
            body: request.and_then(|r| r.body.as_deref()),
            sent_at,
            label: o.label(),
            fallback: o.resolution.fallback().map(ChannelKind::as_str),
            channel: o.channel.as_str(),
            at: o.at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;

    #[test]
    fn slots_start_now_when_the_limiter_is_idle() {
        let g = slots(0, 5, 1000 * MS, 10_000 * MS, Duration::from_secs(50)).unwrap();
        assert_eq!((g.first_in, g.count, g.end_ns), (Duration::ZERO, 5, 15_000 * MS));
        assert_eq!(g.offset(2), Duration::from_secs(2));
    }

    #[test]
    fn slots_queue_behind_another_pass_and_stop_at_the_horizon() {
        let g = slots(55_000 * MS, 10, 1000 * MS, 10_000 * MS, Duration::from_secs(50)).unwrap();
        assert_eq!((g.first_in, g.count, g.end_ns), (Duration::from_secs(45), 6, 61_000 * MS));
        assert!(slots(61_000 * MS, 10, 1000 * MS, 10_000 * MS, Duration::from_secs(50)).is_none());
    }

    #[test]
    fn sub_millisecond_slots_keep_their_exact_spacing() {
        // 700 000 a second is one slot every 1 428 ns: never rounded to a whole millisecond.
        let interval = 1_000_000_000 / 700_000;
        let g = slots(0, 256, interval, 0, Duration::from_secs(50)).unwrap();
        assert_eq!(g.count, 256);
        assert_eq!(g.end_ns, 256 * interval);
        assert!(g.offset(255) < Duration::from_millis(1));
    }

    #[tokio::test]
    async fn only_a_broken_connection_counts_as_lost() {
        use sqlx::Connection as _;
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(StoreError::from(sqlx::Error::Io(reset)).is_connection_lost());
        // A statement the database refused stays refused on any connection.
        let mut conn = sqlx::SqliteConnection::connect("sqlite::memory:").await.unwrap();
        let refused = sqlx::query("SELECT * FROM nowhere").execute(&mut conn).await.unwrap_err();
        assert!(!StoreError::from(refused).is_connection_lost());
        assert!(!StoreError::from(sqlx::Error::PoolTimedOut).is_connection_lost());
        assert!(!StoreError::Other("no database connection".into()).is_connection_lost());
    }

    #[test]
    fn shown_values_are_one_escaped_short_line() {
        assert_eq!(shown("a\nb\u{1b}"), "a\\nb\\u{1b}");
        assert_eq!(shown(&"x".repeat(100)).chars().count(), SHOWN_CHARS + 1);
    }
}
