//! Generation: what is due now becomes outbox rows. Each rule and stage is one set-based
//! statement in the store; this module only decides the date windows and, for recurring
//! scheduled messages, the next occurrence.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;

use crate::config::Settings;
use crate::domain::outbox::DedupKey;
use crate::domain::recurrence::{latest_occurrence, next_occurrence, Recurrence};
use crate::store::{BadValue, GenRow, ScheduledAdvance, Store, StoreError};

/// Scheduled messages are read in pages of this many.
const SCHEDULED_PAGE: i64 = 500;

/// One rule and stage of a generation pass, as the summary shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RuleLine {
    pub rule: &'static str,
    pub stage: String,
    /// The window of subject dates this stage covers today (due dates, visit dates).
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    /// Subjects in the window.
    pub found: u64,
    /// Outbox rows created now.
    pub queued: u64,
    /// Subjects whose reminder already existed.
    pub existing: u64,
    /// Of the rows created, those created `failed` or `skipped` (with the reason).
    pub failed: u64,
    pub skipped: u64,
    #[serde(skip)]
    pub rows: Vec<GenRow>,
}

#[derive(Debug, Clone, Default)]
pub struct GenerateReport {
    pub lines: Vec<RuleLine>,
    /// Queued dunning messages cancelled because their invoice was settled.
    pub cancelled: Vec<GenRow>,
    /// Input rows no rule can use (an unreadable date): no message can be made for them, so
    /// the summary and `status` name them instead.
    pub unreadable: Vec<BadValue>,
}

impl GenerateReport {
    pub fn rows(&self) -> impl Iterator<Item = &GenRow> {
        self.lines.iter().flat_map(|l| l.rows.iter())
    }
}

/// The local date of `now` in `tz`.
pub fn local_today(now: DateTime<Utc>, tz: Tz) -> NaiveDate {
    now.with_timezone(&tz).date_naive()
}

/// Runs every rule once at `now`. `keep` bounds how many new rows per rule are returned for
/// the report: all are counted, and a large pass does not hold them all in memory.
pub async fn generate(
    store: &dyn Store,
    settings: &Settings,
    now: DateTime<Utc>,
    dry_run: bool,
    keep: usize,
) -> Result<GenerateReport, StoreError> {
    let today = local_today(now, settings.timezone);
    let scan = store.scan_inputs().await?;
    let mut report = GenerateReport {
        cancelled: store.cancel_settled(now, dry_run).await?,
        ..GenerateReport::default()
    };

    for stage in settings.dunning.stages() {
        let due = stage.due_range(today);
        let out = store.generate_dunning(&stage.name, due, &scan, now, dry_run, keep).await?;
        report.lines.push(line("dunning", stage.name.clone(), Some(due), out));
    }

    // 0 ≤ days until the visit < 3.
    let visit = (today, today + Duration::days(2));
    let out = store.generate_maintenance(visit, &scan, now, dry_run, keep).await?;
    report.lines.push(line("maintenance", "visit".into(), Some(visit), out));

    let mut scheduled = crate::store::Generated::default();
    let mut after_id = 0;
    loop {
        let due = store.due_scheduled(now, after_id, SCHEDULED_PAGE).await?;
        let Some(last) = due.last() else { break };
        after_id = last.id;
        let advances: Vec<ScheduledAdvance> = due
            .iter()
            .map(|d| {
                // The table's CHECK keeps recurrence valid; an unknown value ends the series
                // after this occurrence rather than failing the pass.
                let recurrence = d.recurrence.parse().unwrap_or(Recurrence::None);
                // After an outage the occurrence worth sending is the latest one that has come;
                // the older ones were overtaken by it and are skipped, not flooded.
                let occurrence =
                    latest_occurrence(d.scheduled_at, recurrence, now, settings.timezone)
                        .map_or(d.run_at, |latest| latest.max(d.run_at));
                ScheduledAdvance {
                    id: d.id,
                    run_at: d.run_at,
                    stored_run_at: d.stored_run_at.clone(),
                    next_run_at: next_occurrence(
                        d.scheduled_at,
                        recurrence,
                        now,
                        settings.timezone,
                    ),
                    dedup_key: DedupKey::scheduled(d.id, occurrence),
                    stage: match recurrence {
                        Recurrence::None => "once".to_string(),
                        other => other.as_str().to_string(),
                    },
                }
            })
            .collect();
        let left = keep.saturating_sub(scheduled.rows.len());
        scheduled.absorb(store.queue_scheduled(&advances, now, dry_run, left).await?);
        if (due.len() as i64) < SCHEDULED_PAGE {
            break;
        }
    }
    report.lines.push(line("scheduled", "due".into(), None, scheduled));
    for bad in &scan.bad {
        tracing::warn!(
            table = bad.table,
            id = bad.id,
            column = bad.column,
            problem = %bad.problem,
            "an input row cannot be read; no reminder can be made for it"
        );
    }
    report.unreadable = scan.bad;
    Ok(report)
}

fn line(
    rule: &'static str,
    stage: String,
    window: Option<(NaiveDate, NaiveDate)>,
    out: crate::store::Generated,
) -> RuleLine {
    RuleLine {
        rule,
        stage,
        from: window.map(|w| w.0),
        to: window.map(|w| w.1),
        found: out.found,
        queued: out.queued,
        existing: out.found.saturating_sub(out.queued),
        failed: out.failed,
        skipped: out.skipped,
        rows: out.rows,
    }
}
