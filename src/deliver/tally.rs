//! What one channel's lane did, counted from the resolutions it wrote: the report reads these
//! counts and nothing else, so the summary cannot disagree with the outbox.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::domain::channel::{ChannelKind, Route};
use crate::domain::outbox::{Outcome, Resolution, RetryCause};
use crate::report::{ChannelLine, Detail};
use crate::store::Claimed;

/// Counters of one lane, shared by its claimer, its sender and their send tasks.
pub struct Tally {
    route: Route,
    provider: &'static str,
    sent: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    deferred: AtomicU64,
    cancelled: AtomicU64,
    skipped: AtomicU64,
    released: AtomicU64,
    fallback: AtomicU64,
    waiting: AtomicU64,
    /// Why the lane stopped early; set once, and then no new send starts.
    paused: OnceLock<String>,
    /// Why the lane left due messages for later without stopping what it had claimed.
    note: OnceLock<String>,
    /// A success proves the channel works again (its down state is cleared once).
    pub seen_success: AtomicBool,
    details: Mutex<Vec<Detail>>,
    keep: usize,
    /// The business clock's date, for "days left" in detail lines.
    today: chrono::NaiveDate,
}

impl Tally {
    pub fn new(
        route: Route,
        provider: &'static str,
        keep: usize,
        today: chrono::NaiveDate,
    ) -> Self {
        Self {
            route,
            provider,
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            deferred: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            released: AtomicU64::new(0),
            fallback: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
            paused: OnceLock::new(),
            note: OnceLock::new(),
            seen_success: AtomicBool::new(false),
            details: Mutex::new(Vec::new()),
            keep,
            today,
        }
    }

    pub fn channel(&self) -> ChannelKind {
        self.route.channel
    }

    pub fn route(&self) -> &Route {
        &self.route
    }

    /// Messages this lane sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Stops the lane from starting new sends; the first reason is the one reported.
    pub fn pause(&self, note: impl Into<String>) {
        let _ = self.paused.set(note.into());
    }

    /// Notes why due messages were left for a later pass; what is claimed still goes out.
    pub fn note(&self, note: impl Into<String>) {
        let _ = self.note.set(note.into());
    }

    pub fn paused(&self) -> Option<&str> {
        self.paused.get().map(String::as_str)
    }

    /// Due messages this lane left for later (rate limit, window).
    pub fn waiting(&self, n: u64) {
        self.waiting.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one resolved message, and keeps its detail line while there is room (with the
    /// text that was sent, if one was).
    pub fn count(&self, claimed: &Claimed, outcome: &Outcome, body: Option<&str>) {
        let counter = match &outcome.resolution {
            Resolution::Sent { .. } => &self.sent,
            Resolution::Failed { .. } => &self.failed,
            Resolution::Skipped { .. } => &self.skipped,
            Resolution::Cancelled { .. } => &self.cancelled,
            Resolution::Released { .. } => &self.released,
            Resolution::Retry { cause: RetryCause::Transient, .. } => &self.retried,
            Resolution::Retry { .. } => &self.deferred,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if outcome.resolution.fallback().is_some() {
            self.fallback.fetch_add(1, Ordering::Relaxed);
        }
        let Ok(mut details) = self.details.lock() else { return };
        if details.len() >= self.keep {
            return;
        }
        let row = claimed.row.as_ref().ok();
        let status = match &outcome.resolution {
            Resolution::Released { .. } => "released".to_string(),
            other => other.status().as_str().to_string(),
        };
        details.push(Detail {
            id: Some(outcome.id),
            kind: row.map_or_else(|| "unknown".into(), |r| r.kind.as_str().to_string()),
            stage: row.and_then(|r| r.stage.clone()),
            channel: self.route.channel.as_str().to_string(),
            provider: outcome.request.as_ref().map(|r| r.provider.clone()),
            recipient: outcome.request.as_ref().map(|r| r.recipient.clone()),
            status,
            error: outcome.resolution.reason().map(str::to_string),
            provider_message_id: match &outcome.resolution {
                Resolution::Sent { provider_message_id } => provider_message_id.clone(),
                _ => None,
            },
            about: super::prepare::about(claimed, self.today, body),
        });
    }

    /// The lane's line in the report, and its detail lines.
    pub fn finish(&self) -> (ChannelLine, Vec<Detail>) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let line = ChannelLine {
            channel: self.route.to_string(),
            provider: Some(self.provider.to_string()),
            sent: get(&self.sent),
            failed: get(&self.failed),
            retried: get(&self.retried),
            deferred: get(&self.deferred),
            cancelled: get(&self.cancelled),
            skipped: get(&self.skipped),
            released: get(&self.released),
            fallback: get(&self.fallback),
            waiting: get(&self.waiting),
            note: self.paused.get().or(self.note.get()).cloned(),
        };
        let details = self.details.lock().map(|mut d| std::mem::take(&mut *d)).unwrap_or_default();
        (line, details)
    }

    /// Adds another round's counts of the same channel (fallback rows delivered in the pass).
    pub fn merge(line: &mut ChannelLine, more: ChannelLine) {
        line.sent += more.sent;
        line.failed += more.failed;
        line.retried += more.retried;
        line.deferred += more.deferred;
        line.cancelled += more.cancelled;
        line.skipped += more.skipped;
        line.released += more.released;
        line.fallback += more.fallback;
        line.waiting = more.waiting;
        if more.note.is_some() {
            line.note = more.note;
        }
    }
}
