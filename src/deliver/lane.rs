//! One channel's lane: a claimer takes batches inside the shared rate limit while a sender
//! starts their sends, so the next batch is claimed while the current one goes out: a claim
//! takes about as long as sending a batch, and a lane that waited for its queue to run dry
//! before claiming would stand idle for every claim.
//!
//! Every send is checked just before it starts: not stopped (SIGTERM), not halted (results
//! cannot be stored), the lane not paused (channel down, rate limited), the send window still
//! open on the business clock, and enough of the lease left for the request to finish. A message
//! that fails a check goes back as it was, without spending an attempt.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit};
use tokio::task::JoinSet;

use super::prepare::{prepare, Job, Prepared};
use super::tally::Tally;
use super::{policy, Pass};
use crate::channels::Channel;
use crate::domain::channel::Route;
use crate::domain::outbox::{Answer, Kind, Outcome, Request, Resolution};
use crate::store::{ClaimRequest, Claimed, Result as StoreResult};

/// Most messages claimed at once.
const BATCH: u32 = 256;

/// How long a claim or reservation that lost its database connection waits before its one
/// more try.
const LOST_RETRY_PAUSE: Duration = Duration::from_millis(200);

/// A claimed message waiting in a lane's queue for its send.
pub(super) struct Queued {
    pub claimed: Claimed,
    /// When its rate-limit slot comes, if the channel has a rate limit.
    pub slot: Option<Instant>,
    /// When its lease ends (monotonic clock, from before the claim: never later than the
    /// database's own lease).
    pub lease_end: Instant,
}

/// Runs one route until nothing is due, the budget is spent, or the lane stops.
pub(super) async fn run(pass: &Pass<'_>, provider: Arc<dyn Channel>, tally: Arc<Tally>) {
    let route = tally.route().clone();
    // The log provider reaches nobody's phone, so no gateway needs protecting from it.
    let interval_ns = if provider.provider() == "log" || pass.manual {
        None
    } else {
        pass.settings
            .route_rate(&route)
            .interval()
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            .filter(|ns| *ns > 0)
    };
    // A monthly quota counts in the calendar month of the real clock, where the zone says.
    let quota = pass.settings.route_quota(&route).map(|q| {
        let month = crate::clock::real_now().with_timezone(&pass.settings.timezone);
        (q, month.format("%Y-%m").to_string())
    });
    // The queue holds two batches, and the next is claimed once at most one is left in it: the
    // sender never runs dry while a claim is on its way, and no claimed message waits behind
    // more than two batches (its lease covers that wait).
    let (tx, rx) = mpsc::channel::<Queued>(2 * batch_size(pass) as usize);
    let drained = Notify::new();
    let lane = Lane { route: &route, interval_ns, quota: quota.as_ref() };
    let claimer = claimer(pass, &lane, &tally, tx, &drained);
    let sender = sender(pass, provider, &tally, rx, Some(&drained));
    let (reserved, ()) = tokio::join!(claimer, sender);
    // Quota reserved for messages that did not go out is given back.
    if let Some((_, month)) = &quota {
        let unused = u32::try_from(u64::from(reserved).saturating_sub(tally.sent())).unwrap_or(0);
        if let Err(e) = pass.store.return_quota(&route, month, unused).await {
            tracing::warn!(error = %e, route = %route, "could not give back unused quota");
        }
    }
}

/// What a claimer works within.
struct Lane<'a> {
    route: &'a Route,
    interval_ns: Option<i64>,
    /// The monthly quota and the month it counts.
    quota: Option<&'a (u64, String)>,
}

/// Most messages claimed at once: what the delivery slots can start soon.
fn batch_size(pass: &Pass<'_>) -> u32 {
    let concurrency = u32::try_from(pass.settings.concurrency).unwrap_or(u32::MAX);
    concurrency.saturating_mul(4).clamp(1, BATCH)
}

/// Messages waiting in a lane's queue.
fn queued(queue: &mpsc::Sender<Queued>) -> usize {
    queue.max_capacity() - queue.capacity()
}

/// The next batch is claimed once the queue holds at most this many.
fn low_water(pass: &Pass<'_>) -> usize {
    batch_size(pass) as usize
}

/// Why the lane must not start a send now, if it must not.
fn must_stop(pass: &Pass<'_>, tally: &Tally) -> Option<String> {
    if pass.stop.requested() {
        return Some("stopped by signal".into());
    }
    if let Some(reason) = pass.halt.reason() {
        return Some(format!("the pass stopped sending: {reason}"));
    }
    if let Some(note) = tally.paused() {
        return Some(note.to_string());
    }
    None
}

/// Claims batches for a lane and queues them with their send slot and lease; returns how many
/// of its route's monthly quota it reserved for what it claimed.
async fn claimer(
    pass: &Pass<'_>,
    lane: &Lane<'_>,
    tally: &Tally,
    queue: mpsc::Sender<Queued>,
    drained: &Notify,
) -> u32 {
    let route = lane.route;
    let mut reserved: u32 = 0;
    let concurrency = u32::try_from(pass.settings.concurrency).unwrap_or(u32::MAX).max(1);
    let want = batch_size(pass);
    loop {
        while queued(&queue) > low_water(pass) && !queue.is_closed() {
            drained.notified().await;
        }
        let ahead = u32::try_from(queued(&queue)).unwrap_or(u32::MAX);
        if let Some(reason) = must_stop(pass, tally) {
            tally.pause(reason);
            return reserved;
        }
        // Outside the rules' send window only scheduled messages are claimed; outside both,
        // nothing is.
        let rules_open = pass.manual || pass.window_open_for(Kind::Dunning);
        if !rules_open && !pass.window_open_for(Kind::Scheduled) {
            tally.note("the send window closed during the pass");
            return reserved;
        }
        let Some(left) = pass.deadline.checked_duration_since(Instant::now()) else {
            return reserved;
        };
        // A monthly quota is reserved before claiming, so that several passes together stop
        // before it is exceeded.
        let mut want = want;
        if let Some((quota, month)) = lane.quota {
            let reserve = || pass.store.reserve_quota(route, month, *quota, want);
            match once_more_if_lost(pass, "reserving the monthly quota", reserve).await {
                Ok(0) => {
                    let due = pass.store.count_due(route, pass.clock.now()).await.unwrap_or(0);
                    if due > 0 {
                        tally.waiting(due);
                        tally.note(format!(
                            "monthly quota of {quota} reached for {month}; {due} due message(s) \
                             wait for next month"
                        ));
                    }
                    return reserved;
                }
                Ok(granted) => want = granted,
                Err(e) => {
                    pass.halt.set(format!("cannot reserve the monthly quota of {route}: {e}"));
                    return reserved;
                }
            }
        }
        let give_back_quota = |claimed: u32| {
            let unused = want.saturating_sub(claimed);
            async move {
                if let (Some((_, month)), true) = (lane.quota, unused > 0) {
                    if let Err(e) = pass.store.return_quota(route, month, unused).await {
                        tracing::warn!(error = %e, "could not give back unused quota");
                    }
                }
            }
        };
        let grant = match lane.interval_ns {
            None => None,
            Some(interval) => match once_more_if_lost(pass, "reserving rate-limit slots", || {
                // A second try must not reach past the budget that is left by then.
                let left = pass.deadline.saturating_duration_since(Instant::now()).min(left);
                pass.store.reserve_slots(route, want, interval, left)
            })
            .await
            {
                Ok(Some(g)) => Some((g, Instant::now())),
                Ok(None) => {
                    give_back_quota(0).await;
                    held_by_rate_limit(pass, route, tally).await;
                    return reserved;
                }
                Err(e) => {
                    give_back_quota(0).await;
                    pass.halt.set(format!("cannot reserve rate-limit slots for {route}: {e}"));
                    return reserved;
                }
            },
        };
        let limit = grant.map_or(want, |(g, _)| g.count);
        let last_slot = grant.map_or(Duration::ZERO, |(g, _)| g.offset(g.count.saturating_sub(1)));
        // The lease covers the wait for the last slot, the wait for a delivery slot behind what
        // is queued ahead and the rest of the batch, the request, and the result's write.
        let behind = limit.saturating_add(ahead).div_ceil(concurrency);
        let lease = last_slot + pass.settings.request_timeout * 2u32.saturating_add(behind);
        let claim_start = Instant::now();
        let request = ClaimRequest {
            route,
            limit: i64::from(limit),
            token: &pass.token,
            now: pass.clock.now(),
            lease,
            only_scheduled: !rules_open,
        };
        // If a claim that lost its connection had claimed rows, they were never sent and come
        // back when their lease ends, so a second claim can neither lose nor double any.
        let claimed = match once_more_if_lost(pass, "claiming", || pass.store.claim(&request)).await
        {
            Ok(c) => c,
            Err(e) => {
                give_back_quota(0).await;
                pass.halt.set(format!("cannot claim {route} messages: {e}"));
                return reserved;
            }
        };
        let count = u32::try_from(claimed.len()).unwrap_or(u32::MAX);
        give_back_quota(count).await;
        if lane.quota.is_some() {
            reserved = reserved.saturating_add(count);
        }
        if let Some((g, _)) = grant {
            let unused = g.count.saturating_sub(count);
            if unused > 0 {
                if let Err(e) = pass.store.return_slots(route, g, unused).await {
                    tracing::warn!(error = %e, "could not give back unused rate-limit slots");
                }
            }
        }
        if claimed.is_empty() {
            return reserved;
        }
        let lease_end = claim_start + lease;
        let mut batch = claimed.into_iter().enumerate();
        while let Some((index, claimed)) = batch.next() {
            let slot = grant.map(|(g, at)| at + g.offset(index as u32));
            if let Err(mpsc::error::SendError(item)) =
                queue.send(Queued { claimed, slot, lease_end }).await
            {
                // The sender has stopped: this message and the rest of the batch go back.
                let reason = tally.paused().unwrap_or("the lane stopped").to_string();
                for claimed in std::iter::once(item.claimed).chain(batch.map(|(_, c)| c)) {
                    release(pass, tally, claimed, &reason).await;
                }
                return reserved;
            }
        }
    }
}

/// Runs a claim or a reservation, and once more on a new connection if the first lost its
/// connection (a restarted server, a killed backend) while the pass still sends.
///
/// A reservation whose answer was lost after it committed stays taken: the rate limit then runs
/// slower for a batch and the month's quota counts a batch that was not sent. Neither can let
/// more out than the limits allow, and halting would not give them back either.
async fn once_more_if_lost<T, F, Fut>(pass: &Pass<'_>, what: &str, mut call: F) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = StoreResult<T>>,
{
    match call().await {
        Err(e) if e.is_connection_lost() && pass.halt.reason().is_none() => {
            tracing::warn!(error = %e, "{what} lost its database connection; trying again");
            tokio::time::sleep(LOST_RETRY_PAUSE).await;
            call().await
        }
        other => other,
    }
}

/// No slot is free before the pass's budget ends: the rest waits for the next pass, and the
/// summary says why.
async fn held_by_rate_limit(pass: &Pass<'_>, route: &Route, tally: &Tally) {
    let rate = pass.settings.route_rate(route);
    let due = pass.store.count_due(route, pass.clock.now()).await.unwrap_or(0);
    if due > 0 {
        tally.waiting(due);
        tally.note(format!(
            "held by the rate limit ({rate}): the next free slot is after this pass; {due} due \
             message(s) wait for the next pass"
        ));
    }
}

/// Sends messages claimed by id (the test commands): the sender of a lane, fed by hand.
pub(super) async fn send_claimed(
    pass: &Pass<'_>,
    provider: Arc<dyn Channel>,
    tally: &Arc<Tally>,
    claimed: Vec<Claimed>,
    lease_end: Instant,
) {
    let (tx, rx) = mpsc::channel(claimed.len().max(1));
    for claimed in claimed {
        let _ = tx.send(Queued { claimed, slot: None, lease_end }).await;
    }
    drop(tx);
    sender(pass, provider, tally, rx, None).await;
}

/// Gives a claimed message back untouched, from outside a lane.
pub(super) async fn release_now(pass: &Pass<'_>, tally: &Tally, claimed: Claimed, reason: &str) {
    release(pass, tally, claimed, reason).await;
}

/// Gives a claimed message back untouched: no attempt spent.
async fn release(pass: &Pass<'_>, tally: &Tally, claimed: Claimed, reason: &str) {
    let outcome = Outcome {
        id: claimed.id(),
        channel: tally.channel(),
        attempts: claimed.row.as_ref().map_or(0, |r| r.attempts),
        request: None,
        resolution: pass.settle(Resolution::Released { reason: reason.to_string() }),
        at: pass.clock.now(),
    };
    tally.count(&claimed, &outcome, None);
    pass.recorder.submit(outcome).await;
}

/// Prepares each queued message and starts its send inside the concurrency bound, at its rate
/// slot, while its lease leaves time to finish.
async fn sender(
    pass: &Pass<'_>,
    provider: Arc<dyn Channel>,
    tally: &Arc<Tally>,
    mut queue: mpsc::Receiver<Queued>,
    drained: Option<&Notify>,
) {
    let mut tasks = JoinSet::new();
    while let Some(Queued { claimed, slot, lease_end }) = queue.recv().await {
        if let (Some(d), true) = (drained, queue.len() <= low_water(pass)) {
            d.notify_one();
        }
        let job = match prepare(&claimed, &pass.rules, pass.clock.now()) {
            Prepared::Done(resolution) => {
                let outcome = Outcome {
                    id: claimed.id(),
                    channel: tally.channel(),
                    attempts: claimed.row.as_ref().map_or(0, |r| r.attempts),
                    request: None,
                    resolution: pass.settle(resolution),
                    at: pass.clock.now(),
                };
                log_outcome(&claimed, &outcome);
                tally.count(&claimed, &outcome, None);
                pass.recorder.submit(outcome).await;
                continue;
            }
            Prepared::Send(job) => job,
        };
        let permit = tokio::select! {
            p = pass.permits.clone().acquire_owned() => p.ok(),
            () = pass.stop.wait() => None,
            () = pass.halt.wait() => None,
        };
        if let Some(at) = slot {
            let wait = at.saturating_duration_since(Instant::now());
            // Sub-millisecond waits are not worth a timer: the slots keep the average exact.
            if wait >= Duration::from_millis(1) {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = pass.stop.wait() => {}
                    () = pass.halt.wait() => {}
                }
            }
        }
        let mut stop = must_stop(pass, tally);
        let kind = claimed.row.as_ref().map_or(Kind::Dunning, |r| r.kind);
        if stop.is_none() && !pass.manual && !pass.window_open_for(kind) {
            // The window closed while this one waited: it waits for the window, the lane goes
            // on with what may still go out.
            let reason = "the send window closed during the pass";
            tally.note(reason);
            release(pass, tally, claimed, reason).await;
            drop(permit);
            continue;
        }
        // A send must be able to finish inside the lease, or another pass could take the
        // message over while its request is still in flight.
        if stop.is_none()
            && lease_end.saturating_duration_since(Instant::now()) < pass.settings.request_timeout
        {
            stop = Some("the lease ran short; the rest waits for the next pass".into());
        }
        let (Some(permit), None) = (permit, stop.clone()) else {
            let reason = stop.unwrap_or_else(|| "stopped by signal".into());
            tally.pause(reason.clone());
            // Give back this message and everything queued, attempts untouched.
            release(pass, tally, claimed, &reason).await;
            queue.close();
            while let Some(rest) = queue.recv().await {
                release(pass, tally, rest.claimed, &reason).await;
            }
            break;
        };
        tasks.spawn(send(pass.sending(provider.clone(), tally.clone()), claimed, *job, permit));
        // Reap finished sends as we go, so memory stays flat however many are sent.
        while tasks.try_join_next().is_some() {}
    }
    // Wake a claimer waiting for room: the queue is closed or empty for good.
    if let Some(d) = drained {
        d.notify_one();
    }
    while tasks.join_next().await.is_some() {}
}

/// What a send task carries after it leaves the lane.
pub(super) struct Sending {
    pub provider: Arc<dyn Channel>,
    pub tally: Arc<Tally>,
    pub recorder: super::recorder::Recorder,
    pub store: Arc<dyn crate::store::Store>,
    pub clock: crate::clock::Clock,
    pub max_attempts: u32,
    /// A person asked for these now: nothing is left for a later pass.
    pub manual: bool,
}

/// Sends one message, decides what follows, and holds the delivery slot until the result is
/// stored.
async fn send(ctx: Sending, claimed: Claimed, job: Job, permit: OwnedSemaphorePermit) {
    let result = ctx.provider.send(&job.message).await;
    let now = ctx.clock.now();
    let (answer, resolution) =
        policy::resolve(job.attempting(), result, ctx.max_attempts, now, rand::random::<f64>());
    let resolution = if ctx.manual { policy::settle_manual(resolution) } else { resolution };
    let channel = job.row.channel;
    let route = ctx.tally.route();
    match (&answer, &resolution) {
        (Answer::Accepted, _) if !ctx.tally.seen_success.swap(true, Ordering::SeqCst) => {
            if let Err(e) = ctx.store.set_channel_down(route, None, now).await {
                tracing::warn!(error = %e, "could not clear the channel's down state");
            }
        }
        (Answer::RateLimited, Resolution::Retry { reason, .. }) => {
            // A rate limit says nothing about this message; the channel rests for this pass
            // rather than hammering the provider.
            ctx.tally.pause(format!("rate limited by the provider: {reason}"));
        }
        (Answer::ChannelDown, Resolution::Retry { reason, .. }) => {
            ctx.tally.pause(format!("channel down: {reason}"));
            if let Err(e) = ctx.store.set_channel_down(route, Some(reason), now).await {
                tracing::warn!(error = %e, "could not record the channel's down state");
            }
        }
        _ => {}
    }
    let outcome = Outcome {
        id: job.row.id,
        channel,
        attempts: job.row.attempts,
        request: Some(Request {
            provider: ctx.provider.provider().to_string(),
            answer,
            recipient: job.message.recipient.clone(),
            subject: job.message.subject.clone(),
            body: job.rendered.then(|| job.message.body.clone()),
        }),
        resolution,
        at: now,
    };
    log_outcome(&claimed, &outcome);
    ctx.tally.count(&claimed, &outcome, Some(&job.message.body));
    ctx.recorder.record(outcome).await;
    drop(permit);
}

fn log_outcome(claimed: &Claimed, o: &Outcome) {
    let kind = claimed.row.as_ref().map_or("unknown", |r| r.kind.as_str());
    let provider = o.request.as_ref().map_or("", |r| r.provider.as_str());
    match &o.resolution {
        Resolution::Sent { .. } => {
            tracing::info!(message_id = o.id, kind, channel = %o.channel, provider, "sent");
        }
        other => tracing::warn!(
            message_id = o.id,
            kind,
            channel = %o.channel,
            status = other.status().as_str(),
            error = other.reason().unwrap_or(""),
            "not sent"
        ),
    }
}
