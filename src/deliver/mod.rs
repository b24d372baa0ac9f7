//! Delivery: claim due messages in batches under a lease, re-check and render each, send with
//! bounded concurrency inside the shared rate limit, and write each result back as soon as it is
//! known. A delivery slot is held until its result is stored, so a crash can leave at most
//! `REMINDER_CONCURRENCY` messages whose fate is unknown (SPEC §6).
//!
//! The channel adapters say what happened; [`policy`] alone decides what to do next, and
//! [`prepare`] decides what a message is before it goes out. Both are pure and return a
//! [`Resolution`](crate::domain::outbox::Resolution), which the [`recorder`] writes, both stores
//! map onto their columns, and the [`tally`] counts for the report.
//!
//! - [`lane`]: per channel, a claimer and a sender.
//! - [`recorder`]: batched result writes; a write that fails for good halts the pass.
//! - [`journal`]: results that could not be written, replayed by the next pass.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{Notify, Semaphore};

use crate::channels::{Channel, Registry};
use crate::clock::Clock;
use crate::config::Settings;
use crate::domain::channel::{ChannelKind, Route};
use crate::domain::outbox::Kind;
use crate::report::{ChannelLine, DeliveryReport, Detail};
use crate::store::{GenRow, Store, StoreError};
use crate::templates::Templates;

pub mod journal;
mod lane;
pub mod policy;
pub mod prepare;
pub mod recorder;
pub mod tally;

use journal::Journal;
use prepare::{Prepared, Rules};
use recorder::{Halt, Recorder};
use tally::Tally;

/// Detail lines kept for the human summary (all are kept for `--json`).
pub const HUMAN_DETAILS: usize = 50;

/// Rounds of a pass: the first sends what is due; each later one sends the fallback rows the
/// previous round queued, while their channel can still take them.
const ROUNDS: usize = ChannelKind::ALL.len();

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
    /// Returns once a stop is requested.
    pub async fn wait(&self) {
        let notified = self.notify.notified();
        if self.requested() {
            return;
        }
        notified.await;
    }
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
    /// Where results that cannot be written are kept; `None` keeps none.
    pub journal: Option<Journal>,
}

/// One round of a pass, shared by its lanes.
pub(crate) struct Pass<'a> {
    store: Arc<dyn Store>,
    settings: &'a Settings,
    rules: Rules<'a>,
    clock: Clock,
    stop: Arc<Stop>,
    halt: Arc<Halt>,
    token: String,
    recorder: Recorder,
    permits: Arc<Semaphore>,
    /// When the pass stops claiming (monotonic clock).
    deadline: Instant,
    /// A person asked for exactly these messages: no send window, no rate limit.
    manual: bool,
}

impl Pass<'_> {
    /// Whether a message of this kind may go out now (business clock): the rules' reminders in
    /// `REMINDER_SEND_WINDOW`, scheduled messages in `REMINDER_SCHEDULED_SEND_WINDOW` when set.
    fn window_open_for(&self, kind: Kind) -> bool {
        windows_open(self.settings, self.clock)[usize::from(kind == Kind::Scheduled)]
    }

    fn sending(&self, provider: Arc<dyn Channel>, tally: Arc<Tally>) -> lane::Sending {
        lane::Sending {
            provider,
            tally,
            recorder: self.recorder.clone(),
            store: self.store.clone(),
            clock: self.clock,
            max_attempts: self.settings.max_attempts,
            manual: self.manual,
        }
    }

    /// What becomes of a message this round decided about without sending it.
    fn settle(
        &self,
        resolution: crate::domain::outbox::Resolution,
    ) -> crate::domain::outbox::Resolution {
        if self.manual {
            policy::settle_manual(resolution)
        } else {
            resolution
        }
    }
}

impl Delivery<'_> {
    fn rules(&self) -> Rules<'_> {
        Rules {
            templates: self.templates,
            dunning: &self.settings.dunning,
            max_attempts: self.settings.max_attempts,
            sender_name: self.settings.sender_name.as_deref().unwrap_or_default(),
            service_phone: self.settings.service_phone.as_deref().unwrap_or_default(),
            timezone: self.settings.timezone,
        }
    }

    /// The business clock's date.
    fn today(&self) -> chrono::NaiveDate {
        self.clock.now().with_timezone(&self.settings.timezone).date_naive()
    }

    fn keep(&self) -> usize {
        if self.all_details {
            usize::MAX
        } else {
            HUMAN_DETAILS
        }
    }

    pub fn window_note(&self) -> Option<String> {
        let local = self.clock.now().with_timezone(&self.settings.timezone);
        let window = self.settings.send_window;
        (!window.contains(local.time())).then(|| {
            format!(
                "outside the send window {window} ({} {}); reminders wait until {}",
                local.format("%H:%M"),
                self.settings.timezone,
                window.next_open(local.naive_local()).format("%Y-%m-%d %H:%M"),
            )
        })
    }

    /// Writes what an earlier pass could not store, before anything is claimed. If that fails,
    /// the pass must not send: it could send again what the journal says was sent.
    async fn replay(&self, report: &mut DeliveryReport) -> bool {
        let Some(journal) = &self.journal else { return true };
        match journal.replay(self.store.as_ref()).await {
            Ok(done) => {
                report.replayed = done.written;
                report.late += done.late;
                true
            }
            Err(e) => {
                report.halted = Some(format!("{e}; nothing was sent"));
                false
            }
        }
    }

    /// Runs one delivery pass over every configured channel.
    pub async fn run(&self) -> Result<DeliveryReport, StoreError> {
        let mut report = DeliveryReport::default();
        if !self.replay(&mut report).await {
            return Ok(report);
        }
        report.window_closed = self.window_note();
        let [_, scheduled_open] = windows_open(self.settings, self.clock);
        let now = self.clock.now();
        let mut lines: Vec<ChannelLine> = Vec::new();
        let mut details: Vec<Detail> = Vec::new();
        let mut round: Vec<(Route, Arc<dyn Channel>)> = Vec::new();
        for (route, provider) in self.registry.routes() {
            if report.window_closed.is_none() || scheduled_open {
                round.push((route.clone(), provider.clone()));
            } else {
                lines.push(ChannelLine {
                    channel: route.to_string(),
                    provider: Some(provider.provider().to_string()),
                    waiting: self.store.count_due(route, now).await?,
                    note: Some("send window closed".to_string()),
                    ..ChannelLine::default()
                });
            }
        }
        lines.extend(self.unrouted(now).await?);
        if !round.is_empty() && !self.store.has_open_messages().await? {
            // Nothing to claim on any route: each says so without opening a lane.
            for (route, provider) in round.drain(..) {
                lines.push(ChannelLine {
                    channel: route.to_string(),
                    provider: Some(provider.provider().to_string()),
                    ..ChannelLine::default()
                });
            }
        }
        let token = claim_token();
        let halt = Arc::new(Halt::default());
        let permits = Arc::new(Semaphore::new(self.settings.concurrency));
        let deadline = Instant::now() + self.settings.pass_budget;
        for _ in 0..ROUNDS {
            if round.is_empty() || self.stop.requested() || halt.reason().is_some() {
                break;
            }
            let (recorder, written) = recorder::start(
                self.store.clone(),
                token.clone(),
                halt.clone(),
                self.journal.clone(),
            );
            let pass = Pass {
                store: self.store.clone(),
                settings: self.settings,
                rules: self.rules(),
                clock: self.clock,
                stop: self.stop.clone(),
                halt: halt.clone(),
                token: token.clone(),
                recorder,
                permits: permits.clone(),
                deadline,
                manual: false,
            };
            let tallies: Vec<Arc<Tally>> = round
                .iter()
                .map(|(r, p)| {
                    Arc::new(Tally::new(r.clone(), p.provider(), self.keep(), self.today()))
                })
                .collect();
            let running = round
                .iter()
                .zip(&tallies)
                .map(|((_, p), t)| lane::run(&pass, p.clone(), t.clone()));
            futures::future::join_all(running).await;
            drop(pass);
            let written = written.await.unwrap_or_default();
            report.late += written.late;
            report.unrecorded += written.unrecorded;
            report.journaled += written.journaled;
            for tally in &tallies {
                let (line, mut more) = tally.finish();
                details.append(&mut more);
                match lines.iter_mut().find(|l| l.channel == line.channel) {
                    Some(existing) => Tally::merge(existing, line),
                    None => lines.push(line),
                }
            }
            // Fallback rows (on a channel's default route) go out in this pass when that lane
            // can still take them.
            round = written
                .fallbacks
                .iter()
                .filter_map(|c| {
                    let route = Route::of(*c);
                    let usable = tallies
                        .iter()
                        .find(|t| *t.route() == route)
                        .is_none_or(|t| t.paused().is_none());
                    let provider = self.registry.route(&route)?;
                    (usable && Instant::now() < deadline).then_some((route, provider))
                })
                .collect();
        }
        let order: Vec<String> = self.registry.routes().map(|(r, _)| r.to_string()).collect();
        lines.sort_by_key(|l| {
            let channel = l.channel.split(' ').next().unwrap_or_default();
            let kind = channel.parse::<ChannelKind>().map_or(usize::MAX, ChannelKind::index);
            (kind, order.iter().position(|o| *o == l.channel).unwrap_or(usize::MAX))
        });
        report.channels = lines;
        report.details = details;
        if report.halted.is_none() {
            report.halted = halt.reason().map(str::to_string);
        }
        Ok(report)
    }

    /// Due messages no configured route can take: a channel without a provider, or a WhatsApp
    /// connection that is not configured. They wait, and the summary says why.
    async fn unrouted(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<ChannelLine>, StoreError> {
        let mut lines = Vec::new();
        for channel in [ChannelKind::Telegram, ChannelKind::Email] {
            if self.registry.route(&Route::of(channel)).is_none() {
                let waiting = self.store.count_due(&Route::of(channel), now).await?;
                if waiting > 0 {
                    lines.push(ChannelLine {
                        channel: channel.as_str().to_string(),
                        waiting,
                        note: Some(Settings::unconfigured_reason(channel.as_str()).to_string()),
                        ..ChannelLine::default()
                    });
                }
            }
        }
        for (connection, waiting) in self.store.due_by_connection(now).await? {
            let route = Route { channel: ChannelKind::WhatsApp, connection: connection.clone() };
            if self.registry.route(&route).is_some() || waiting == 0 {
                continue;
            }
            let note = match &connection {
                None => Settings::unconfigured_reason("whatsapp").to_string(),
                Some(name) => format!(
                    "no WhatsApp connection '{name}' is configured (add it to \
                     WHATSAPP_CONNECTIONS, with WHATSAPP_{}_PROVIDER and its settings)",
                    name.to_ascii_uppercase()
                ),
            };
            lines.push(ChannelLine {
                channel: route.to_string(),
                waiting,
                note: Some(note),
                ..ChannelLine::default()
            });
        }
        Ok(lines)
    }

    /// Delivers the given messages now, outside the send window and the rate limits: a person
    /// at a terminal asked for exactly these (`test-whatsapp`, `test-dunning`).
    pub async fn deliver_now(&self, ids: &[i64]) -> Result<DeliveryReport, StoreError> {
        let mut report = DeliveryReport::default();
        if !self.replay(&mut report).await {
            return Ok(report);
        }
        let token = claim_token();
        let halt = Arc::new(Halt::default());
        let lease = self.settings.request_timeout * 4;
        let claim_start = Instant::now();
        let claimed = self.store.claim_ids(ids, &token, lease).await?;
        let (recorder, written) =
            recorder::start(self.store.clone(), token.clone(), halt.clone(), self.journal.clone());
        let pass = Pass {
            store: self.store.clone(),
            settings: self.settings,
            rules: self.rules(),
            clock: self.clock,
            stop: self.stop.clone(),
            halt: halt.clone(),
            token,
            recorder,
            permits: Arc::new(Semaphore::new(self.settings.concurrency)),
            deadline: claim_start + lease,
            manual: true,
        };
        let mut tallies = Vec::new();
        let mut routes: Vec<Route> = claimed
            .iter()
            .filter_map(|c| c.row.as_ref().ok())
            .map(|r| Route { channel: r.channel, connection: r.connection.clone() })
            .collect();
        routes.sort();
        routes.dedup();
        for route in routes {
            let mine: Vec<_> = claimed
                .iter()
                .filter(|c| {
                    c.row.as_ref().is_ok_and(|r| {
                        r.channel == route.channel && r.connection == route.connection
                    })
                })
                .cloned()
                .collect();
            let Some(provider) = self.registry.route(&route) else {
                let tally = Tally::new(route.clone(), "none", usize::MAX, self.today());
                let reason = match &route.connection {
                    None => Settings::unconfigured_reason(route.channel.as_str()).to_string(),
                    Some(name) => format!("no WhatsApp connection '{name}' is configured"),
                };
                for c in mine {
                    lane::release_now(&pass, &tally, c, &reason).await;
                }
                continue;
            };
            let tally = Arc::new(Tally::new(route, provider.provider(), usize::MAX, self.today()));
            lane::send_claimed(&pass, provider, &tally, mine, claim_start + lease).await;
            tallies.push(tally);
        }
        drop(pass);
        let written = written.await.unwrap_or_default();
        report.late = written.late;
        report.unrecorded = written.unrecorded;
        report.journaled = written.journaled;
        for tally in tallies {
            let (line, mut details) = tally.finish();
            report.channels.push(line);
            report.details.append(&mut details);
        }
        report.halted = halt.reason().map(str::to_string);
        Ok(report)
    }

    /// What each of these rows would be if it were sent now: its recipient, its text and the
    /// business fields, or why it would not go (paid, opted out, bad value). Claims nothing and
    /// writes nothing; `dry-run` and `upcoming` show these.
    pub async fn render(&self, rows: &[GenRow], sendable: bool) -> Result<Vec<Detail>, StoreError> {
        let now = self.clock.now();
        let today = self.today();
        let rules = self.rules();
        let context = self.store.context_of(rows).await?;
        Ok(rows
            .iter()
            .zip(context)
            .map(|(row, claimed)| {
                let provider = row.channel.parse::<ChannelKind>().ok().and_then(|channel| {
                    let route = Route { channel, connection: row.connection.clone() };
                    self.registry.route(&route).map(|p| p.provider().to_string())
                });
                let unrouted = || match &row.connection {
                    None => Settings::unconfigured_reason(&row.channel).to_string(),
                    Some(name) => format!("no WhatsApp connection '{name}' is configured"),
                };
                let queued_as = row.status.as_str();
                let (status, error, recipient, body) = if queued_as == "pending" {
                    match prepare::prepare(&claimed, &rules, now) {
                        Prepared::Send(job) => (
                            if sendable && provider.is_some() {
                                "would send"
                            } else {
                                "would wait"
                            }
                            .to_string(),
                            provider.is_none().then(unrouted),
                            Some(job.message.recipient.clone()),
                            Some(job.message.body.clone()),
                        ),
                        Prepared::Done(resolution) => (
                            format!("would be {}", resolution.status().as_str()),
                            resolution.reason().map(str::to_string),
                            None,
                            None,
                        ),
                    }
                } else {
                    (format!("would be {queued_as}"), row.error.clone(), None, None)
                };
                Detail {
                    id: row.id,
                    kind: row.kind.clone(),
                    stage: row.stage.clone(),
                    channel: row.channel.clone(),
                    provider,
                    recipient,
                    status,
                    error,
                    provider_message_id: None,
                    about: prepare::about(&claimed, today, body.as_deref()),
                }
            })
            .collect())
    }

    /// Previews what `run` would send, claiming nothing.
    pub async fn preview(&self) -> Result<DeliveryReport, StoreError> {
        let now = self.clock.now();
        let mut report =
            DeliveryReport { window_closed: self.window_note(), ..DeliveryReport::default() };
        let sendable = report.window_closed.is_none();
        let mut shown: Vec<ChannelKind> = Vec::new();
        for (route, provider) in self.registry.routes() {
            let waiting = self.store.count_due(route, now).await?;
            report.channels.push(ChannelLine {
                channel: route.to_string(),
                provider: Some(provider.provider().to_string()),
                waiting,
                note: (!sendable).then(|| "send window closed".to_string()),
                ..ChannelLine::default()
            });
            if shown.contains(&route.channel) {
                continue;
            }
            shown.push(route.channel);
            let keep = if self.all_details { i64::MAX } else { HUMAN_DETAILS as i64 };
            let due = self.store.preview_due(route.channel, now, keep).await?;
            let mut details = self.render(&due, sendable).await?;
            for d in &mut details {
                d.provider = Some(provider.provider().to_string());
            }
            report.details.append(&mut details);
        }
        report.channels.extend(self.unrouted(now).await?);
        Ok(report)
    }
}

/// Whether the rules' send window and the scheduled messages' window are open now.
fn windows_open(settings: &Settings, clock: Clock) -> [bool; 2] {
    let local = clock.now().with_timezone(&settings.timezone).time();
    [
        settings.send_window.contains(local),
        settings.scheduled_window.is_none_or(|w| w.contains(local)),
    ]
}

/// A claim token unique to this pass: every write after the claim must present it.
fn claim_token() -> String {
    format!("{}-{:016x}", std::process::id(), rand::random::<u64>())
}
