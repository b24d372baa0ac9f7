//! Storage: the `Store` trait and its two implementations, chosen by the URL's scheme. This is
//! the only place SQL lives. The same contract tests run against both backends.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};

pub mod postgres;
pub mod sqlite;

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

/// Opens the database named by `url` (`sqlite:…` or `postgres://…`).
pub async fn connect(url: &str) -> Result<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::connect(url).await?))
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
}

/// Queue one occurrence and move the series on, compare-and-set on `run_at`.
#[derive(Debug, Clone)]
pub struct ScheduledAdvance {
    pub id: i64,
    pub run_at: DateTime<Utc>,
    /// `None` ends the series (a one-off, or a bad recurrence).
    pub next_run_at: Option<DateTime<Utc>>,
    pub dedup_key: String,
    pub stage: String,
}

/// A claimed outbox row with what delivery needs to re-check and render it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub id: i64,
    pub kind: String,
    pub subject_id: Option<i64>,
    pub stage: Option<String>,
    pub event_date: Option<String>,
    pub channel: String,
    pub subject: Option<String>,
    pub body: Option<String>,
    pub media_url: Option<String>,
    pub attempts: i32,
    pub contact_id: Option<i64>,
    pub contact_found: Option<i64>,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub telegram_chat_id: Option<String>,
    pub opted_out: Option<bool>,
    pub invoice_number: Option<String>,
    pub invoice_amount: Option<i64>,
    pub invoice_due: Option<String>,
    pub invoice_status: Option<String>,
    pub plate_no: Option<String>,
    /// The contact's ordered channel preference, for fallback.
    pub channels: Option<String>,
    /// The address stored on the row (test messages are addressed when queued).
    pub recipient: Option<String>,
}

/// The result of handling one claimed message, written back in one batch with the others.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub id: i64,
    /// The attempt number this outcome belongs to (the claim's `attempts`).
    pub attempt: i32,
    pub channel: String,
    /// The message's new status: `sent`, `pending`, `failed`, `cancelled` or `skipped`.
    pub status: &'static str,
    /// Give the claim's attempt back (rate limit, channel down, released unsent).
    pub refund: bool,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    pub provider: Option<&'static str>,
    pub provider_message_id: Option<String>,
    pub recipient: Option<String>,
    pub subject: Option<String>,
    pub body: Option<String>,
    pub sent_at: Option<DateTime<Utc>>,
    /// The label kept in `delivery_attempts`; `None` keeps no history row.
    pub history: Option<&'static str>,
    pub at: DateTime<Utc>,
    /// Queue the same reminder on this channel next (the contact's next preference).
    pub fallback: Option<String>,
}

/// A message queued directly rather than by a rule (`test-whatsapp`, `test-dunning`).
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub kind: &'static str,
    pub subject_id: Option<i64>,
    pub stage: Option<String>,
    pub event_date: Option<NaiveDate>,
    pub dedup_key: String,
    pub contact_id: Option<i64>,
    pub channel: String,
    pub recipient: Option<String>,
    pub body: Option<String>,
}

/// A contact found or created by `test-dunning`.
#[derive(Debug, Clone)]
pub struct TestContact {
    pub id: i64,
    pub name: String,
    pub existed: bool,
}

/// Rate-limit slots reserved for one batch: `count` sends, one per interval from `first_ms`.
#[derive(Debug, Clone, Copy)]
pub struct SlotGrant {
    pub first_ms: i64,
    pub count: u32,
    /// The limiter's next free slot after this grant, to give unused slots back.
    pub end_ms: i64,
}

/// A due message, as a dry run shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Preview {
    pub id: i64,
    pub kind: String,
    pub stage: Option<String>,
    pub channel: String,
    pub contact_id: Option<i64>,
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
    pub at: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ChannelDown {
    pub channel: String,
    pub reason: String,
    pub since: String,
}

#[derive(Debug, Clone, Default)]
pub struct StatusData {
    pub counts: Vec<StatusCount>,
    pub failures: Vec<Failure>,
    pub down: Vec<ChannelDown>,
    /// Pending messages whose time has come, per channel.
    pub due: Vec<(String, i64)>,
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

#[async_trait]
pub trait Store: Send + Sync {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;

    /// Applies pending migrations; safe when several processes start at once.
    async fn migrate(&self) -> Result<()>;

    /// Queues dunning stage `stage` for unpaid invoices due within `due` (inclusive), keeping
    /// up to `keep` of the new rows in the result.
    async fn generate_dunning(
        &self,
        stage: &str,
        due: (NaiveDate, NaiveDate),
        now: DateTime<Utc>,
        dry_run: bool,
        keep: usize,
    ) -> Result<Generated>;

    /// Queues a maintenance reminder for vehicles whose next visit falls within `visit`.
    async fn generate_maintenance(
        &self,
        visit: (NaiveDate, NaiveDate),
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

    /// Reserves up to `count` send slots of `interval_ms` on `channel`, none later than
    /// `horizon_ms`. Shared by every pass on this database.
    async fn reserve_slots(
        &self,
        channel: &str,
        count: u32,
        interval_ms: i64,
        now_ms: i64,
        horizon_ms: i64,
    ) -> Result<Option<SlotGrant>>;

    /// Gives back the last `unused` slots of a grant, if nobody reserved after it.
    async fn return_slots(
        &self,
        channel: &str,
        grant: SlotGrant,
        unused: u32,
        interval_ms: i64,
    ) -> Result<()>;

    /// Claims up to `limit` due messages of `channel` for this pass, with a lease.
    async fn claim(
        &self,
        channel: &str,
        limit: i64,
        token: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Claimed>>;

    /// Writes outcomes back, only where this pass still holds the claim. Returns the ids whose
    /// lease was lost (their result is kept in `delivery_attempts` only, marked late).
    async fn record(&self, token: &str, outcomes: &[Outcome]) -> Result<Vec<i64>>;

    /// Marks a channel down (with the reason) or up (`None`).
    async fn set_channel_down(
        &self,
        channel: &str,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<()>;

    /// Due messages of a channel, without claiming them.
    async fn preview_due(
        &self,
        channel: &str,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Preview>>;

    /// Counts, latest failures and channel health.
    async fn status(&self, now: DateTime<Utc>, failures: i64) -> Result<StatusData>;

    /// Claims the given messages now, whatever their due time (the test commands).
    async fn claim_ids(
        &self,
        ids: &[i64],
        token: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Claimed>>;

    /// Inserts messages (`ON CONFLICT DO NOTHING`) and returns the new ids.
    async fn insert_messages(&self, rows: &[NewMessage], now: DateTime<Utc>) -> Result<Vec<i64>>;

    /// The contact with this email address, or a new one named `name`; the phone is updated to
    /// `phone` and email then WhatsApp become its channels. With `dry_run`, only looks it up.
    async fn test_contact(
        &self,
        name: &str,
        email: &str,
        phone: &str,
        dry_run: bool,
    ) -> Result<Option<TestContact>>;

    /// A new unpaid invoice; returns its id.
    async fn create_invoice(
        &self,
        contact_id: i64,
        number: &str,
        amount: i64,
        due: NaiveDate,
    ) -> Result<i64>;

    /// Loads demo rows; with `reset`, removes earlier demo rows and their messages first.
    async fn seed(&self, demo: &DemoData, reset: bool) -> Result<SeedCounts>;
}

/// Carves a grant out of the limiter's state: slots start at the later of its next free slot
/// and now, one per interval, and none lies past the horizon.
pub(crate) fn slots(
    next_ms: i64,
    count: u32,
    interval_ms: i64,
    now_ms: i64,
    horizon_ms: i64,
) -> Option<SlotGrant> {
    let first_ms = next_ms.max(now_ms);
    if count == 0 || interval_ms <= 0 || first_ms > horizon_ms {
        return None;
    }
    let room = (horizon_ms - first_ms) / interval_ms + 1;
    let count = i64::from(count).min(room) as u32;
    Some(SlotGrant { first_ms, count, end_ms: first_ms + i64::from(count) * interval_ms })
}

#[cfg(test)]
mod tests {
    use super::slots;

    #[test]
    fn slots_start_now_when_the_limiter_is_idle() {
        let g = slots(0, 5, 1000, 10_000, 60_000).unwrap();
        assert_eq!((g.first_ms, g.count, g.end_ms), (10_000, 5, 15_000));
    }

    #[test]
    fn slots_queue_behind_another_pass_and_stop_at_the_horizon() {
        let g = slots(55_000, 10, 1000, 10_000, 60_000).unwrap();
        assert_eq!((g.first_ms, g.count, g.end_ms), (55_000, 6, 61_000));
        assert!(slots(61_000, 10, 1000, 10_000, 60_000).is_none());
    }
}
