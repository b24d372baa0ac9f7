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

#[cfg(test)]
mod tests {
    use chrono::{NaiveDate, TimeZone, Utc};

    use super::*;
    use crate::deliver::prepare::tests::dunning_message;
    use crate::domain::outbox::{Answer, Request};

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2025, 11, 17).unwrap()
    }

    fn tally(keep: usize) -> Tally {
        Tally::new(Route::of(ChannelKind::WhatsApp), "twilio", keep, today())
    }

    fn claimed(id: i64) -> Claimed {
        let mut claimed = dunning_message("2025-11-20");
        if let Ok(row) = claimed.row.as_mut() {
            row.id = id;
        }
        claimed
    }

    fn outcome(id: i64, resolution: Resolution) -> Outcome {
        Outcome {
            id,
            channel: ChannelKind::WhatsApp,
            attempts: 0,
            request: Some(Request {
                provider: "twilio".into(),
                answer: Answer::Accepted,
                recipient: "6281234567890".into(),
                subject: None,
                body: None,
            }),
            resolution,
            at: Utc.with_ymd_and_hms(2025, 11, 17, 2, 0, 0).unwrap(),
        }
    }

    fn retry(cause: RetryCause) -> Resolution {
        let at = Utc.with_ymd_and_hms(2025, 11, 17, 3, 0, 0).unwrap();
        Resolution::Retry { at, reason: format!("{cause:?}"), cause }
    }

    fn count(t: &Tally, id: i64, resolution: Resolution) {
        t.count(&claimed(id), &outcome(id, resolution), Some("Halo"));
    }

    #[test]
    fn each_resolution_is_counted_under_its_own_heading() {
        let t = tally(0);
        count(&t, 1, Resolution::Sent { provider_message_id: Some("SM1".into()) });
        count(&t, 2, Resolution::Sent { provider_message_id: None });
        count(&t, 3, Resolution::Failed { reason: "blocked".into(), fallback: None });
        let fallback = Some(ChannelKind::Email);
        count(&t, 4, Resolution::Failed { reason: "not on WhatsApp".into(), fallback });
        count(&t, 5, Resolution::Skipped { reason: "no phone".into(), fallback });
        count(&t, 6, Resolution::Skipped { reason: "opted out".into(), fallback: None });
        count(&t, 7, Resolution::Cancelled { reason: "paid".into() });
        count(&t, 8, Resolution::Released { reason: "stop".into() });
        count(&t, 9, retry(RetryCause::Transient));
        count(&t, 10, retry(RetryCause::Transient));
        count(&t, 11, retry(RetryCause::RateLimited));
        count(&t, 12, retry(RetryCause::ChannelDown));
        count(&t, 13, retry(RetryCause::Rescheduled));
        t.waiting(5);
        t.waiting(2);
        assert_eq!(t.sent(), 2);
        let (line, details) = t.finish();
        let counts = [
            line.sent,
            line.failed,
            line.skipped,
            line.cancelled,
            line.released,
            line.retried,
            line.deferred,
            line.fallback,
            line.waiting,
        ];
        assert_eq!(counts, [2, 2, 2, 1, 1, 2, 3, 2, 7]);
        assert_eq!(line.channel, "whatsapp");
        assert_eq!(line.provider.as_deref(), Some("twilio"));
        assert_eq!(line.note, None);
        assert!(details.is_empty(), "keep 0 keeps no detail lines: {details:?}");
        assert_eq!(t.channel(), ChannelKind::WhatsApp);
        assert_eq!(t.route(), &Route::of(ChannelKind::WhatsApp));
    }

    #[test]
    fn detail_lines_stop_at_the_limit_and_say_what_happened() {
        let t = tally(3);
        count(&t, 1, Resolution::Sent { provider_message_id: Some("SM1".into()) });
        count(&t, 2, Resolution::Released { reason: "stop".into() });
        let bad = Claimed { row: Err((3, "no contact".into())), ..claimed(3) };
        let failed = Resolution::Failed { reason: "missing contact".into(), fallback: None };
        t.count(&bad, &outcome(3, failed), None);
        count(&t, 4, Resolution::Sent { provider_message_id: Some("SM4".into()) });
        let (line, details) = t.finish();
        assert_eq!((line.sent, line.released, line.failed), (2, 1, 1), "counted past the limit");
        let ids: Vec<_> = details.iter().map(|d| d.id).collect();
        assert_eq!(ids, [Some(1), Some(2), Some(3)]);

        let sent = &details[0];
        assert_eq!((sent.status.as_str(), sent.kind.as_str()), ("sent", "dunning"));
        assert_eq!(sent.provider_message_id.as_deref(), Some("SM1"));
        assert_eq!(sent.error, None);
        assert_eq!(sent.stage.as_deref(), Some("T-3"));
        assert_eq!(sent.recipient.as_deref(), Some("6281234567890"));
        assert_eq!(sent.about.body.as_deref(), Some("Halo"));
        assert_eq!(sent.about.days_left, Some(3));

        let released = &details[1];
        assert_eq!(released.status, "released", "released reads as such, not as pending");
        assert_eq!(released.provider_message_id, None);
        assert_eq!(released.error.as_deref(), Some("stop"));

        let failed = &details[2];
        assert_eq!((failed.status.as_str(), failed.kind.as_str()), ("failed", "unknown"));
        assert_eq!(failed.error.as_deref(), Some("missing contact"));
        assert_eq!(t.finish().1.len(), 0, "finish hands the detail lines over once");
    }

    #[test]
    fn the_first_pause_is_the_reason_and_outranks_a_note() {
        let t = tally(10);
        assert_eq!(t.paused(), None);
        t.note("rate limit: 20 left for the next pass");
        assert_eq!(t.paused(), None, "a note does not stop the lane");
        assert_eq!(t.finish().0.note.as_deref(), Some("rate limit: 20 left for the next pass"));
        t.pause("credentials rejected");
        t.pause("a later reason");
        assert_eq!(t.paused(), Some("credentials rejected"));
        assert_eq!(t.finish().0.note.as_deref(), Some("credentials rejected"));
    }

    #[test]
    fn merging_a_later_round_adds_its_counts_and_keeps_its_waiting_and_note() {
        let line = |n: u64, note: Option<&str>| ChannelLine {
            channel: "email".into(),
            provider: Some("smtp".into()),
            sent: n,
            failed: n + 1,
            retried: n + 2,
            deferred: n + 3,
            cancelled: n + 4,
            skipped: n + 5,
            released: n + 6,
            fallback: n + 7,
            waiting: n + 8,
            note: note.map(str::to_string),
        };
        let mut total = line(10, Some("first"));
        Tally::merge(&mut total, line(3, None));
        let got = [
            total.sent,
            total.failed,
            total.retried,
            total.deferred,
            total.cancelled,
            total.skipped,
            total.released,
            total.fallback,
            total.waiting,
        ];
        assert_eq!(got, [13, 15, 17, 19, 21, 23, 25, 27, 11]);
        assert_eq!(total.note.as_deref(), Some("first"), "a round without a note keeps the old");
        Tally::merge(&mut total, line(0, Some("second")));
        assert_eq!(total.note.as_deref(), Some("second"));
        assert_eq!((total.sent, total.waiting), (13, 8));
    }
}
