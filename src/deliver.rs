//! Delivery: claim due messages in batches under a lease, re-check and render each, send with
//! bounded concurrency inside the shared rate limit, and write each result back as soon as it is
//! known. A delivery slot is held until its result is stored, so a crash can leave at most
//! `REMINDER_CONCURRENCY` messages whose fate is unknown (SPEC §6).
//!
//! The channel adapters say what happened; this module alone decides what to do next.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};
use tokio::task::JoinSet;

use crate::channels::{Channel, DeliveryError, OutboundMessage, Registry};
use crate::clock::Clock;
use crate::config::{Settings, CHANNELS};
use crate::domain::{backoff, format, phone};
use crate::generate::local_today;
use crate::store::{Claimed, Outcome, Store, StoreError};
use crate::templates::{DunningVars, MaintenanceVars, Templates};

/// Most messages claimed at once when a channel has no rate limit.
const BATCH: u32 = 256;
/// Most results written back in one statement.
const RECORD_BATCH: usize = 512;
/// Result writes running at once: while one commits, the next batch fills.
const RECORD_WRITERS: usize = 2;
/// How long a result write waits for more results to join it.
const RECORD_LINGER: Duration = Duration::from_millis(2);
/// Extra lease beyond the last slot and the request timeout.
const LEASE_MARGIN: Duration = Duration::from_secs(30);
/// Detail lines kept for the human summary (all are kept for `--json`).
pub const HUMAN_DETAILS: usize = 50;

/// Asks a pass to stop early (SIGTERM, Ctrl-C): no new sends start, claimed ones go back.
#[derive(Debug, Default)]
pub struct Stop {
    flag: AtomicBool,
    notify: Notify,
}

impl Stop {
    pub fn request(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }
    pub fn requested(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
    async fn wait(&self) {
        let notified = self.notify.notified();
        if self.requested() {
            return;
        }
        notified.await;
    }
}

/// What one channel did in this pass.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChannelLine {
    pub channel: String,
    pub provider: Option<String>,
    pub sent: u64,
    pub failed: u64,
    pub retried: u64,
    pub cancelled: u64,
    pub skipped: u64,
    /// Claimed but given back unsent (channel down, stop requested).
    pub released: u64,
    /// Failed or skipped here, and queued on the contact's next channel.
    pub fallback: u64,
    /// Due messages left waiting (channel not configured, window closed).
    pub waiting: u64,
    /// Why the channel stopped or did not run.
    pub note: Option<String>,
}

/// One message touched by the pass.
#[derive(Debug, Clone, Serialize)]
pub struct Detail {
    pub id: Option<i64>,
    pub kind: String,
    pub stage: Option<String>,
    pub channel: String,
    pub provider: Option<String>,
    pub recipient: Option<String>,
    pub status: String,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct DeliveryReport {
    pub channels: Vec<ChannelLine>,
    pub details: Vec<Detail>,
    /// Set when the send window is closed: why nothing was sent.
    pub window_closed: Option<String>,
    /// Results that arrived after another pass had taken the message over.
    pub late: u64,
    /// Results that could not be written (the messages come back when their lease ends).
    pub unrecorded: u64,
}

/// Everything a delivery pass needs.
pub struct Delivery<'a> {
    pub store: Arc<dyn Store>,
    pub settings: &'a Settings,
    pub registry: &'a Registry,
    pub templates: &'a Templates,
    pub clock: Clock,
    pub stop: Arc<Stop>,
    /// Keep every detail line (for `--json`), or only the first [`HUMAN_DETAILS`].
    pub all_details: bool,
}

/// Tallies shared by a channel's lane and its send tasks.
struct Tally {
    line: Mutex<ChannelLine>,
    details: Mutex<Vec<Detail>>,
    keep: usize,
    /// Set when the lane must stop starting sends: channel down, rate limited, stop requested.
    paused: AtomicBool,
    seen_success: AtomicBool,
}

impl Tally {
    fn new(channel: &str, provider: &str, keep: usize) -> Self {
        Self {
            line: Mutex::new(ChannelLine {
                channel: channel.to_string(),
                provider: Some(provider.to_string()),
                ..ChannelLine::default()
            }),
            details: Mutex::new(Vec::new()),
            keep,
            paused: AtomicBool::new(false),
            seen_success: AtomicBool::new(false),
        }
    }

    fn pause(&self, note: String) {
        if !self.paused.swap(true, Ordering::SeqCst) {
            if let Ok(mut line) = self.line.lock() {
                line.note = Some(note);
            }
        }
    }

    fn count(&self, claimed: &Claimed, outcome: &Outcome, released: bool) {
        if let Ok(mut line) = self.line.lock() {
            if outcome.fallback.is_some() {
                line.fallback += 1;
            }
            match outcome.status {
                "sent" => line.sent += 1,
                "failed" => line.failed += 1,
                "cancelled" => line.cancelled += 1,
                "skipped" => line.skipped += 1,
                _ if released => line.released += 1,
                _ => line.retried += 1,
            }
        }
        if let Ok(mut details) = self.details.lock() {
            if details.len() < self.keep {
                details.push(Detail {
                    id: Some(claimed.id),
                    kind: claimed.kind.clone(),
                    stage: claimed.stage.clone(),
                    channel: claimed.channel.clone(),
                    provider: outcome.provider.map(str::to_string),
                    recipient: outcome.recipient.clone(),
                    status: if released { "released".into() } else { outcome.status.to_string() },
                    error: outcome.error.clone(),
                });
            }
        }
    }
}

type RecordRequest = (Outcome, oneshot::Sender<()>);

/// Writes results in batches: whatever has arrived while earlier writes ran goes in the next
/// one, and two writes may run at once. Each sender waits for its acknowledgement before giving
/// up its delivery slot.
async fn recorder(
    store: Arc<dyn Store>,
    token: String,
    mut rx: mpsc::Receiver<RecordRequest>,
) -> (u64, u64) {
    let mut writes: JoinSet<(u64, u64)> = JoinSet::new();
    let (mut late, mut unrecorded) = (0, 0);
    while let Some(first) = rx.recv().await {
        // Gather for a moment: a statement per result costs the database more than the
        // results themselves, and a sender waits at most this long longer for its slot.
        let mut batch = vec![first];
        let linger = tokio::time::Instant::now() + RECORD_LINGER;
        while batch.len() < RECORD_BATCH {
            match tokio::time::timeout_at(linger, rx.recv()).await {
                Ok(Some(next)) => batch.push(next),
                Ok(None) | Err(_) => break,
            }
        }
        while writes.len() >= RECORD_WRITERS {
            if let Some(Ok((l, u))) = writes.join_next().await {
                late += l;
                unrecorded += u;
            }
        }
        writes.spawn(write_batch(store.clone(), token.clone(), batch));
    }
    while let Some(done) = writes.join_next().await {
        if let Ok((l, u)) = done {
            late += l;
            unrecorded += u;
        }
    }
    (late, unrecorded)
}

/// Writes one batch of results, retrying a failed write a few times; returns how many results
/// were late and how many could not be written.
async fn write_batch(
    store: Arc<dyn Store>,
    token: String,
    batch: Vec<RecordRequest>,
) -> (u64, u64) {
    let outcomes: Vec<Outcome> = batch.iter().map(|(o, _)| o.clone()).collect();
    let mut tries = 0;
    let counts = loop {
        match store.record(&token, &outcomes).await {
            Ok(lost) => {
                for id in &lost {
                    tracing::warn!(
                        message = id,
                        "result arrived after the lease ended and another pass took the \
                         message; kept in delivery_attempts only"
                    );
                }
                break (lost.len() as u64, 0);
            }
            Err(e) if tries < 3 => {
                tries += 1;
                tracing::warn!(error = %e, "writing results failed; trying again");
                tokio::time::sleep(Duration::from_millis(200 * tries)).await;
            }
            Err(e) => {
                tracing::error!(
                    error = %e,
                    count = outcomes.len(),
                    "could not write delivery results; these messages stay claimed and are \
                     retried when their lease ends"
                );
                break (0, outcomes.len() as u64);
            }
        }
    };
    for (_, ack) in batch {
        let _ = ack.send(());
    }
    counts
}

#[derive(Clone)]
struct Recorder(mpsc::Sender<RecordRequest>);

impl Recorder {
    /// Queues a result without waiting for it to be written: for outcomes decided without a
    /// provider call, where a crash before the write only means the message is handled again.
    async fn submit(&self, outcome: Outcome) {
        let (ack, _) = oneshot::channel();
        let _ = self.0.send((outcome, ack)).await;
    }

    /// Queues a result and waits until it is written.
    async fn record(&self, outcome: Outcome) {
        let (ack, done) = oneshot::channel();
        if self.0.send((outcome, ack)).await.is_ok() {
            let _ = done.await;
        }
    }
}

/// A claimed message waiting in a lane's queue for its send.
struct Queued {
    claimed: Claimed,
    /// When its rate-limit slot comes (epoch ms), if the channel has a rate limit.
    slot_ms: Option<i64>,
    lease_until: DateTime<Utc>,
}

/// A claimed message ready for its provider.
struct Job {
    claimed: Claimed,
    message: OutboundMessage,
}

// Short-lived, one at a time: boxing would only add an allocation per message.
#[allow(clippy::large_enum_variant)]
enum Prepared {
    Done(Outcome),
    Send(Job),
}

impl Delivery<'_> {
    /// Runs one delivery pass over every configured channel.
    pub async fn run(&self) -> Result<DeliveryReport, StoreError> {
        let now = self.clock.now();
        let mut report = DeliveryReport::default();
        let local = now.with_timezone(&self.settings.timezone);
        let window = self.settings.send_window;
        if !window.contains(local.time()) {
            let opens = window.next_open(local.naive_local());
            report.window_closed = Some(format!(
                "outside the send window {window} ({} {}); messages wait until {}",
                local.format("%H:%M"),
                self.settings.timezone,
                opens.format("%Y-%m-%d %H:%M"),
            ));
        }

        let token = claim_token();
        let (recorder, recorder_task) = self.start_recorder(&token);
        let slots = Arc::new(Semaphore::new(self.settings.concurrency));
        let keep = if self.all_details { usize::MAX } else { HUMAN_DETAILS };

        let mut lanes = Vec::new();
        for channel in CHANNELS {
            match self.registry.get(channel) {
                Some(provider) if report.window_closed.is_none() => {
                    let tally = Arc::new(Tally::new(channel, provider.provider(), keep));
                    lanes.push(self.lane(channel, provider, &token, &recorder, &slots, tally));
                }
                provider => {
                    let waiting = self.store.preview_due(channel, now, 1000).await?.len() as u64;
                    let note = if provider.is_none() {
                        Settings::unconfigured_reason(channel).to_string()
                    } else {
                        "send window closed".to_string()
                    };
                    if waiting > 0 || provider.is_some() {
                        report.channels.push(ChannelLine {
                            channel: channel.to_string(),
                            provider: provider.map(|p| p.provider().to_string()),
                            waiting,
                            note: Some(note),
                            ..ChannelLine::default()
                        });
                    }
                }
            }
        }
        let results = futures::future::join_all(lanes).await;
        drop(recorder);
        let (late, unrecorded) = recorder_task.await.unwrap_or((0, 0));
        report.late = late;
        report.unrecorded = unrecorded;
        for result in results {
            let tally = result?;
            let line = tally.line.lock().map(|l| l.clone()).unwrap_or_default();
            if let Ok(mut d) = tally.details.lock() {
                report.details.append(&mut d);
            }
            report.channels.push(line);
        }
        report.channels.sort_by_key(|l| CHANNELS.iter().position(|c| *c == l.channel));
        Ok(report)
    }

    fn start_recorder(&self, token: &str) -> (Recorder, tokio::task::JoinHandle<(u64, u64)>) {
        let (tx, rx) = mpsc::channel(RECORD_BATCH * 2);
        let task = tokio::spawn(recorder(self.store.clone(), token.to_string(), rx));
        (Recorder(tx), task)
    }

    /// Delivers the given messages now, outside the send window and the rate limits: a person
    /// at a terminal asked for exactly these (`test-whatsapp`, `test-dunning`).
    pub async fn deliver_now(&self, ids: &[i64]) -> Result<DeliveryReport, StoreError> {
        let now = self.clock.now();
        let token = claim_token();
        let lease = now + to_chrono(self.settings.request_timeout + LEASE_MARGIN);
        let claimed = self.store.claim_ids(ids, &token, now, lease).await?;
        let (recorder, recorder_task) = self.start_recorder(&token);
        let today = local_today(now, self.settings.timezone);
        let mut tallies: Vec<Arc<Tally>> = Vec::new();
        for c in claimed {
            let Some(provider) = self.registry.get(&c.channel) else {
                let outcome = self.released(&c);
                recorder.record(outcome).await;
                continue;
            };
            let tally = if let Some(t) =
                tallies.iter().find(|t| t.line.lock().is_ok_and(|l| l.channel == c.channel))
            {
                t.clone()
            } else {
                let t = Arc::new(Tally::new(&c.channel, provider.provider(), usize::MAX));
                tallies.push(t.clone());
                t
            };
            let channel = c.channel.clone();
            match self.prepare(c.clone(), today, &channel) {
                Prepared::Done(outcome) => {
                    tally.count(&c, &outcome, false);
                    recorder.record(outcome).await;
                }
                Prepared::Send(job) => {
                    let ctx = SendContext {
                        provider,
                        recorder: recorder.clone(),
                        tally: tally.clone(),
                        store: self.store.clone(),
                        clock: self.clock,
                        max_attempts: self.settings.max_attempts,
                    };
                    ctx.send(job).await;
                }
            }
        }
        drop(recorder);
        let (late, unrecorded) = recorder_task.await.unwrap_or((0, 0));
        let mut report = DeliveryReport { late, unrecorded, ..DeliveryReport::default() };
        for tally in tallies {
            report.channels.push(tally.line.lock().map(|l| l.clone()).unwrap_or_default());
            if let Ok(mut d) = tally.details.lock() {
                report.details.append(&mut d);
            }
        }
        Ok(report)
    }

    /// Previews what `run` would send, claiming nothing.
    pub async fn preview(&self) -> Result<DeliveryReport, StoreError> {
        let now = self.clock.now();
        let mut report = DeliveryReport::default();
        let local = now.with_timezone(&self.settings.timezone);
        if !self.settings.send_window.contains(local.time()) {
            report.window_closed = Some(format!(
                "outside the send window {} ({} {})",
                self.settings.send_window,
                local.format("%H:%M"),
                self.settings.timezone
            ));
        }
        for channel in CHANNELS {
            let due = self.store.preview_due(channel, now, 1000).await?;
            let provider = self.registry.get(channel).map(|p| p.provider().to_string());
            let sendable = provider.is_some() && report.window_closed.is_none();
            if due.is_empty() && provider.is_none() {
                continue;
            }
            report.channels.push(ChannelLine {
                channel: channel.to_string(),
                provider: provider.clone(),
                waiting: due.len() as u64,
                note: (!sendable).then(|| {
                    if provider.is_none() {
                        Settings::unconfigured_reason(channel).to_string()
                    } else {
                        "send window closed".to_string()
                    }
                }),
                ..ChannelLine::default()
            });
            let keep = if self.all_details { due.len() } else { HUMAN_DETAILS };
            report.details.extend(due.into_iter().take(keep).map(|p| Detail {
                id: Some(p.id),
                kind: p.kind,
                stage: p.stage,
                channel: p.channel,
                provider: provider.clone(),
                recipient: None,
                status: if sendable { "would send".into() } else { "would wait".into() },
                error: None,
            }));
        }
        Ok(report)
    }

    /// One channel: a claimer takes batches inside the rate limit while a sender starts their
    /// sends, so the next batch is claimed while the current one goes out. Both stop when
    /// nothing is due, the pass budget is spent, or the channel stops.
    async fn lane(
        &self,
        channel: &'static str,
        provider: Arc<dyn Channel>,
        token: &str,
        recorder: &Recorder,
        slots: &Arc<Semaphore>,
        tally: Arc<Tally>,
    ) -> Result<Arc<Tally>, StoreError> {
        // The log provider reaches nobody's phone, so no gateway needs protecting from it.
        let interval = if provider.provider() == "log" {
            None
        } else {
            self.settings.rate(channel).interval()
        };
        // One batch in the queue while the previous one is sent.
        let (tx, rx) = mpsc::channel::<Queued>(BATCH as usize);
        let claimer = self.claimer(channel, interval, token, recorder, &tally, tx);
        let sender = self.sender(channel, provider, recorder, slots, &tally, rx);
        let (claiming, ()) = tokio::join!(claimer, sender);
        claiming?;
        Ok(tally)
    }

    /// Claims batches for a lane and queues them with their send slot and lease.
    async fn claimer(
        &self,
        channel: &'static str,
        interval: Option<Duration>,
        token: &str,
        recorder: &Recorder,
        tally: &Tally,
        queue: mpsc::Sender<Queued>,
    ) -> Result<(), StoreError> {
        let deadline = self.clock.now() + to_chrono(self.settings.pass_budget);
        let interval_ms = interval.map_or(0, |d| d.as_millis().max(1) as i64);
        loop {
            let now = self.clock.now();
            if self.stop.requested() {
                tally.pause("stopped by signal".into());
            }
            if tally.paused.load(Ordering::SeqCst) || now >= deadline {
                return Ok(());
            }
            if !self
                .settings
                .send_window
                .contains(now.with_timezone(&self.settings.timezone).time())
            {
                tally.pause("the send window closed during the pass".into());
                return Ok(());
            }
            let grant = if interval.is_some() {
                let want = BATCH.min(self.settings.concurrency as u32 * 4).max(1);
                let horizon = deadline.timestamp_millis();
                match self
                    .store
                    .reserve_slots(channel, want, interval_ms, now.timestamp_millis(), horizon)
                    .await?
                {
                    Some(g) => Some(g),
                    None => return Ok(()),
                }
            } else {
                None
            };
            // Without a rate limit, claim only what the delivery slots can start soon, so that
            // no claimed message waits past its lease.
            let unlimited = (self.settings.concurrency as u32).saturating_mul(4).clamp(1, BATCH);
            let limit = grant.map_or(unlimited, |g| g.count);
            let last_slot_wait = grant.map_or(0, |g| (g.end_ms - now.timestamp_millis()).max(0));
            let lease_until = now
                + chrono::Duration::milliseconds(last_slot_wait)
                + to_chrono(self.settings.request_timeout + LEASE_MARGIN);
            let claimed =
                self.store.claim(channel, i64::from(limit), token, now, lease_until).await?;
            if let Some(g) = grant {
                let unused = g.count.saturating_sub(claimed.len() as u32);
                if unused > 0 {
                    self.store.return_slots(channel, g, unused, interval_ms).await?;
                }
            }
            if claimed.is_empty() {
                return Ok(());
            }
            let mut batch = claimed.into_iter().enumerate();
            while let Some((index, claimed)) = batch.next() {
                let slot_ms = grant.map(|g| g.first_ms + index as i64 * interval_ms);
                let item = Queued { claimed, slot_ms, lease_until };
                if let Err(mpsc::error::SendError(item)) = queue.send(item).await {
                    // The sender has stopped: this message and the rest of the batch go back.
                    for claimed in std::iter::once(item.claimed).chain(batch.map(|(_, c)| c)) {
                        let outcome = self.released(&claimed);
                        tally.count(&claimed, &outcome, true);
                        recorder.submit(outcome).await;
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Prepares each queued message and starts its send inside the concurrency bound, at its
    /// rate slot, while its lease leaves time to finish.
    async fn sender(
        &self,
        channel: &'static str,
        provider: Arc<dyn Channel>,
        recorder: &Recorder,
        slots: &Arc<Semaphore>,
        tally: &Arc<Tally>,
        mut queue: mpsc::Receiver<Queued>,
    ) {
        let mut tasks = JoinSet::new();
        while let Some(Queued { claimed, slot_ms, lease_until }) = queue.recv().await {
            let now = self.clock.now();
            let job = match self.prepare(
                claimed.clone(),
                local_today(now, self.settings.timezone),
                channel,
            ) {
                Prepared::Done(outcome) => {
                    tally.count(&claimed, &outcome, false);
                    recorder.submit(outcome).await;
                    continue;
                }
                Prepared::Send(job) => job,
            };
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => p.ok(),
                () = self.stop.wait() => None,
            };
            if let Some(slot) = slot_ms {
                let wait = slot - self.clock.now().timestamp_millis();
                if wait > 0 {
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
                        () = self.stop.wait() => {}
                    }
                }
            }
            if self.stop.requested() {
                tally.pause("stopped by signal".into());
            }
            // A send must be able to finish inside the lease, or another pass could take the
            // message over while its request is still in flight.
            if lease_until - self.clock.now() < to_chrono(self.settings.request_timeout) {
                tally.pause("the lease ran short; the rest waits for the next pass".into());
            }
            let Some(permit) = permit.filter(|_| !tally.paused.load(Ordering::SeqCst)) else {
                // Give back this message and everything queued, attempts returned.
                let outcome = self.released(&job.claimed);
                tally.count(&job.claimed, &outcome, true);
                recorder.submit(outcome).await;
                queue.close();
                while let Some(rest) = queue.recv().await {
                    let outcome = self.released(&rest.claimed);
                    tally.count(&rest.claimed, &outcome, true);
                    recorder.submit(outcome).await;
                }
                break;
            };
            let ctx = SendContext {
                provider: provider.clone(),
                recorder: recorder.clone(),
                tally: tally.clone(),
                store: self.store.clone(),
                clock: self.clock,
                max_attempts: self.settings.max_attempts,
            };
            tasks.spawn(async move {
                ctx.send(job).await;
                drop(permit);
            });
            // Reap finished sends as we go, so memory stays flat however many are sent.
            while tasks.try_join_next().is_some() {}
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Re-checks a claimed message against the current data and renders it.
    fn prepare(&self, c: Claimed, today: NaiveDate, channel: &str) -> Prepared {
        let now = self.clock.now();
        let done = |status: &'static str, error: String, history: &'static str| {
            Prepared::Done(outcome(&c, status, Some(error), Some(history), now))
        };
        if c.attempts > self.settings.max_attempts as i32 {
            return done(
                "failed",
                format!(
                    "outcome unknown: the lease expired during attempt {} of {}; the provider may or may not have \
                     received it, so it is not sent again",
                    c.attempts - 1,
                    self.settings.max_attempts
                ),
                "expired",
            );
        }
        if c.kind == "test" {
            // Addressed and written when queued by a test command; no contact behind it.
            let Some(recipient) = c.recipient.clone() else {
                return done("failed", "the test message has no recipient".into(), "failed");
            };
            let message = OutboundMessage {
                id: c.id,
                recipient,
                subject: c.subject.clone(),
                body: c.body.clone().unwrap_or_default(),
                media_url: c.media_url.clone(),
            };
            return Prepared::Send(Job { claimed: c, message });
        }
        if c.contact_found.is_none() {
            let who = c.contact_id.map_or_else(|| "(none)".to_string(), |id| id.to_string());
            return done("failed", format!("contact {who} not found"), "failed");
        }
        if c.opted_out == Some(true) {
            return done("skipped", "contact opted out".into(), "skipped");
        }
        let name = c.name.clone().unwrap_or_default();
        let sender_name = self.settings.sender_name.clone().unwrap_or_default();
        let service_phone = self.settings.service_phone.clone().unwrap_or_default();
        let event_date = c.event_date.as_deref().and_then(|d| d.parse::<NaiveDate>().ok());

        let rendered = match c.kind.as_str() {
            "dunning" => {
                let (Some(status), Some(due)) = (
                    c.invoice_status.as_deref(),
                    c.invoice_due.as_deref().and_then(|d| d.parse::<NaiveDate>().ok()),
                ) else {
                    return done("cancelled", "the invoice no longer exists".into(), "cancelled");
                };
                if status != "unpaid" {
                    return done("cancelled", format!("invoice is {status}"), "cancelled");
                }
                if event_date != Some(due) {
                    return done(
                        "cancelled",
                        format!("the invoice's due date changed to {due}"),
                        "cancelled",
                    );
                }
                let current = self.settings.dunning.current_stage(due, today);
                let stage = c.stage.clone().unwrap_or_default();
                if current.as_ref().map(|s| s.name.as_str()) != Some(stage.as_str()) {
                    let now_stage = current.map_or_else(|| "none".to_string(), |s| s.name);
                    return done(
                        "cancelled",
                        format!("stage {stage} is over (current stage: {now_stage})"),
                        "cancelled",
                    );
                }
                let days = (today - due).num_days();
                let amount = c.invoice_amount.unwrap_or(0);
                let number = c
                    .invoice_number
                    .clone()
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| format!("#{}", c.subject_id.unwrap_or(0)));
                self.templates.dunning(
                    &DunningVars {
                        name,
                        invoice_number: number,
                        amount: format::rupiah(amount),
                        amount_value: amount,
                        due_date: format::tanggal(due),
                        stage,
                        days_left: (-days).max(0),
                        days_overdue: days.max(0),
                        sender_name,
                        service_phone,
                    },
                    days > 0,
                )
            }
            "maintenance" => {
                let (Some(plate_no), Some(visit)) = (c.plate_no.clone(), event_date) else {
                    return done("cancelled", "the vehicle no longer exists".into(), "cancelled");
                };
                self.templates.maintenance(&MaintenanceVars {
                    name,
                    plate_no,
                    visit_date: format::dd_mm_yyyy(visit),
                    days_until_visit: (visit - today).num_days(),
                    sender_name,
                    service_phone,
                })
            }
            _ => Ok(crate::templates::Rendered {
                subject: c.subject.clone().unwrap_or_default(),
                body: c.body.clone().unwrap_or_default(),
            }),
        };
        let rendered = match rendered {
            Ok(r) => r,
            Err(e) => return done("failed", e.to_string(), "failed"),
        };
        if rendered.body.trim().is_empty() && c.media_url.is_none() {
            return done("failed", "the message is empty".into(), "failed");
        }

        let recipient = match address(&c, channel) {
            Ok(r) => r,
            Err(Unusable::Missing(what)) => {
                let o = outcome(
                    &c,
                    "skipped",
                    Some(format!("contact has no {what}")),
                    Some("skipped"),
                    now,
                );
                return Prepared::Done(with_fallback(o, &c));
            }
            Err(Unusable::Invalid(why)) => {
                let o = outcome(&c, "failed", Some(why), Some("failed"), now);
                return Prepared::Done(with_fallback(o, &c));
            }
        };
        let message = OutboundMessage {
            id: c.id,
            recipient,
            subject: (!rendered.subject.is_empty()).then_some(rendered.subject),
            body: rendered.body,
            media_url: c.media_url.clone(),
        };
        Prepared::Send(Job { claimed: c, message })
    }

    fn released(&self, c: &Claimed) -> Outcome {
        let mut o = outcome(c, "pending", None, None, self.clock.now());
        o.refund = true;
        o.next_attempt_at = Some(self.clock.now());
        o
    }
}

/// What a send task needs after it leaves the lane.
struct SendContext {
    provider: Arc<dyn Channel>,
    recorder: Recorder,
    tally: Arc<Tally>,
    store: Arc<dyn Store>,
    clock: Clock,
    max_attempts: u32,
}

impl SendContext {
    async fn send(self, job: Job) {
        let Job { claimed, message } = job;
        let result = self.provider.send(&message).await;
        let now = self.clock.now();
        let mut o = outcome(&claimed, "pending", None, None, now);
        o.provider = Some(self.provider.provider());
        o.recipient = Some(message.recipient.clone());
        o.subject.clone_from(&message.subject);
        o.body = Some(message.body.clone());
        match result {
            Ok(receipt) => {
                o.status = "sent";
                o.history = Some("sent");
                o.sent_at = Some(now);
                o.provider_message_id = receipt.provider_message_id;
                if !self.tally.seen_success.swap(true, Ordering::SeqCst) {
                    // A success proves the channel works again.
                    if let Err(e) = self.store.set_channel_down(&claimed.channel, None, now).await {
                        tracing::warn!(error = %e, "could not clear the channel's down state");
                    }
                }
            }
            Err(DeliveryError::Permanent { reason }) => {
                o.status = "failed";
                o.history = Some("permanent");
                o.error = Some(reason);
                o = with_fallback(o, &claimed);
            }
            Err(DeliveryError::Transient { reason, retry_after }) => {
                o.history = Some("transient");
                if claimed.attempts >= self.max_attempts as i32 {
                    o.status = "failed";
                    o.error =
                        Some(format!("gave up after {} attempts: {reason}", claimed.attempts));
                } else {
                    let delay = retry_after.unwrap_or_else(|| {
                        backoff::retry_delay(claimed.attempts.max(1) as u32, rand::random::<f64>())
                    });
                    o.next_attempt_at = Some(after(now, delay));
                    o.error = Some(reason);
                }
            }
            Err(DeliveryError::RateLimited { reason, retry_after }) => {
                // A rate limit says nothing about this message: the attempt is given back, and
                // the channel stops for this pass rather than hammering the provider.
                let delay = retry_after.unwrap_or(Duration::from_secs(60));
                o.history = Some("rate_limited");
                o.refund = true;
                o.next_attempt_at = Some(after(now, delay));
                self.tally.pause(format!("rate limited by the provider: {reason}"));
                o.error = Some(reason);
            }
            Err(DeliveryError::ChannelDown { reason }) => {
                o.history = Some("channel_down");
                o.refund = true;
                o.next_attempt_at = Some(now);
                self.tally.pause(format!("channel down: {reason}"));
                if let Err(e) =
                    self.store.set_channel_down(&claimed.channel, Some(&reason), now).await
                {
                    tracing::warn!(error = %e, "could not record the channel's down state");
                }
                o.error = Some(reason);
            }
        }
        match o.status {
            "sent" => {
                tracing::info!(message = claimed.id, kind = %claimed.kind, channel = %claimed.channel, provider = o.provider, "sent");
            }
            status => {
                tracing::warn!(message = claimed.id, kind = %claimed.kind, channel = %claimed.channel, status, error = o.error.as_deref().unwrap_or(""), "not sent");
            }
        }
        self.tally.count(&claimed, &o, false);
        self.recorder.record(o).await;
    }
}

fn outcome(
    c: &Claimed,
    status: &'static str,
    error: Option<String>,
    history: Option<&'static str>,
    at: DateTime<Utc>,
) -> Outcome {
    Outcome {
        id: c.id,
        attempt: c.attempts,
        channel: c.channel.clone(),
        status,
        refund: false,
        next_attempt_at: None,
        error,
        provider: None,
        provider_message_id: None,
        recipient: None,
        subject: None,
        body: None,
        sent_at: None,
        history,
        at,
        fallback: None,
    }
}

/// The channel after `current` in a contact's ordered preference (`whatsapp,email`), if any.
pub fn next_channel(preference: Option<&str>, current: &str) -> Option<String> {
    let list: Vec<String> = preference
        .unwrap_or_default()
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| CHANNELS.contains(&c.as_str()))
        .collect();
    let at = list.iter().position(|c| c == current)?;
    list.into_iter().skip(at + 1).find(|c| c != current)
}

/// Marks a failed or skipped outcome to continue on the contact's next channel.
fn with_fallback(mut o: Outcome, c: &Claimed) -> Outcome {
    if c.kind == "test" {
        return o;
    }
    if let Some(next) = next_channel(c.channels.as_deref(), &c.channel) {
        let reason = o.error.take().unwrap_or_default();
        o.error = Some(format!("{reason}; falling back to {next}"));
        o.fallback = Some(next);
    }
    o
}

enum Unusable {
    /// The contact has no address for this channel (skipped).
    Missing(&'static str),
    /// The address is there but unusable (failed, with the reason).
    Invalid(String),
}

/// The contact's address on `channel`, normalized.
fn address(c: &Claimed, channel: &str) -> Result<String, Unusable> {
    let present = |v: &Option<String>| {
        v.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string)
    };
    match channel {
        "whatsapp" => {
            let raw = present(&c.phone).ok_or(Unusable::Missing("phone number"))?;
            phone::normalize(&raw).map_err(|e| Unusable::Invalid(e.to_string()))
        }
        "telegram" => present(&c.telegram_chat_id).ok_or(Unusable::Missing("Telegram chat id")),
        "email" => {
            let email = present(&c.email).ok_or(Unusable::Missing("email address"))?;
            if email.contains('@') && !email.contains(char::is_whitespace) {
                Ok(email)
            } else {
                Err(Unusable::Invalid(format!("invalid email address '{email}'")))
            }
        }
        other => Err(Unusable::Invalid(format!("unknown channel '{other}'"))),
    }
}

/// Longest wait a provider can impose on a message; a larger `Retry-After` is taken as this.
const MAX_DELAY: Duration = Duration::from_secs(24 * 3600);

/// A claim token unique to this pass: every write after the claim must present it.
fn claim_token() -> String {
    format!("{}-{:016x}", std::process::id(), rand::random::<u64>())
}

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d.min(MAX_DELAY)).unwrap_or(chrono::Duration::MAX)
}

/// `now + delay`, never overflowing whatever a provider asked for.
fn after(now: DateTime<Utc>, delay: Duration) -> DateTime<Utc> {
    now.checked_add_signed(to_chrono(delay)).unwrap_or(now)
}
