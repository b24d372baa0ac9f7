//! `run`, `generate` and `send`: one pass, reported and recorded; or, with `--every`, one pass
//! per interval until SIGTERM or Ctrl-C.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::channels::Registry;
use crate::cli::PassArgs;
use crate::clock::Clock;
use crate::config::Settings;
use crate::deliver::{Delivery, Stop};
use crate::report::{emit, PassReport};
use crate::store::{PassCounts, PassStart, Store};
use crate::templates::Templates;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Run,
    Generate,
    Send,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Run => "run",
            Self::Generate => "generate",
            Self::Send => "send",
        }
    }
}

/// What one pass works with.
struct Pass<'a> {
    mode: Mode,
    args: &'a PassArgs,
    settings: &'a Settings,
    templates: &'a Templates,
    registry: &'a Registry,
    store: Arc<dyn Store>,
    clock: Clock,
    stop: Arc<Stop>,
}

pub async fn run(
    mode: Mode,
    args: PassArgs,
    env: HashMap<String, String>,
) -> anyhow::Result<ExitCode> {
    if let Some(every) = args.every.clone() {
        return every_interval(mode, &args, &every, env).await;
    }
    let setup = super::setup(&args.common, env).await?;
    let stop = Arc::new(Stop::default());
    let signals = tokio::spawn(stop_on_signal(stop.clone()));
    let pass = Pass {
        mode,
        args: &args,
        settings: &setup.settings,
        templates: &setup.templates,
        registry: &setup.registry,
        store: setup.store.clone(),
        clock: setup.clock,
        stop,
    };
    let outcome = recorded(&pass).await;
    signals.abort();
    let report = outcome?;
    if args.common.json {
        emit(&report.to_json().to_string());
    } else {
        emit(&report.to_text());
    }
    // A pass that could not store its results did not complete: cron must hear of it.
    if let Some(why) = report.deliver.as_ref().and_then(|d| d.halted.clone()) {
        anyhow::bail!("the pass stopped early: {why}");
    }
    let failed = report.totals().failed;
    // A dry run fails nothing: what it would create failed is shown, not done.
    Ok(if args.strict && !args.dry_run && failed > 0 {
        ExitCode::from(super::EXIT_STRICT_FAILURES)
    } else {
        ExitCode::from(super::EXIT_OK)
    })
}

/// One pass, recorded in `passes` and announced to the heartbeat monitor. A dry run is not a
/// pass: it records nothing and pings nothing. Recording is best effort: a database that cannot
/// take the record fails the pass's own writes too, and those are what decide its outcome.
async fn recorded(pass: &Pass<'_>) -> anyhow::Result<PassReport> {
    if pass.args.dry_run {
        return one(pass).await;
    }
    let start = PassStart {
        command: pass.mode.name(),
        host: hostname(),
        pid: std::process::id(),
        business_now: pass.args.common.now.map(|_| pass.clock.start()),
    };
    let id = match pass.store.begin_pass(&start).await {
        Ok(id) => Some(id),
        Err(e) => {
            tracing::warn!("the pass could not be recorded in passes: {e}");
            None
        }
    };
    let outcome = one(pass).await;
    let (counts, error) = match &outcome {
        Ok(report) => {
            let counts = report.totals();
            let halted = report.deliver.as_ref().and_then(|d| d.halted.clone());
            (counts, halted.map(|why| format!("the pass stopped early: {why}")))
        }
        Err(e) => (PassCounts::default(), Some(crate::logging::causes(e))),
    };
    if let Some(id) = id {
        if let Err(e) = pass.store.finish_pass(id, &counts, error.as_deref()).await {
            tracing::warn!("the end of the pass could not be recorded in passes: {e}");
        }
    }
    crate::heartbeat::beat(pass.settings.heartbeat.as_ref(), error.is_none()).await;
    outcome
}

/// Generation, then delivery, as the mode asks.
async fn one(pass: &Pass<'_>) -> anyhow::Result<PassReport> {
    let (args, settings) = (pass.args, pass.settings);
    let now = pass.clock.start();
    let mut report = PassReport {
        command: pass.mode.name(),
        now,
        timezone: settings.timezone,
        dry_run: args.dry_run,
        generate: None,
        rendered: None,
        deliver: None,
    };
    // `--json` lists every message touched; the human summary shows the first few.
    let keep = if args.common.json { usize::MAX } else { crate::deliver::HUMAN_DETAILS };
    let delivery = Delivery {
        store: pass.store.clone(),
        settings,
        registry: pass.registry,
        templates: pass.templates,
        clock: pass.clock,
        stop: pass.stop.clone(),
        all_details: args.common.json,
        journal: Some(super::journal(settings)),
    };
    if pass.mode != Mode::Send {
        let generated =
            crate::generate::generate(pass.store.as_ref(), settings, now, args.dry_run, keep)
                .await
                .context("generation failed")?;
        if args.dry_run {
            // What would be queued, rendered as it would go out: who, what, and the text.
            let rows: Vec<_> = generated.rows().cloned().collect();
            let sendable = delivery.window_note().is_none();
            report.rendered =
                Some(delivery.render(&rows, sendable).await.context("rendering failed")?);
        }
        report.generate = Some(generated);
    }
    if pass.mode != Mode::Generate && !pass.stop.requested() {
        let delivered = if args.dry_run {
            delivery.preview().await
        } else {
            let progress = sending_progress(pass).await;
            let delivered = delivery.run().await;
            if let Some((bar, task)) = progress {
                task.abort();
                bar.finish();
            }
            delivered
        };
        report.deliver = Some(delivered.context("delivery failed")?);
    }
    Ok(report)
}

/// Fewer due messages than this go out without a progress bar.
const PROGRESS_FROM: u64 = 200;

/// A progress bar for a large send, on a terminal only: the due messages of the configured
/// routes, counted down from the store twice a second, so delivery itself does not wait on it.
async fn sending_progress(
    pass: &Pass<'_>,
) -> Option<(crate::progress::Progress, tokio::task::JoinHandle<()>)> {
    use std::io::IsTerminal as _;
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let routes: Vec<_> = pass.registry.routes().map(|(r, _)| r.clone()).collect();
    let now = pass.clock.now();
    let mut total = 0;
    for route in &routes {
        total += pass.store.count_due(route, now).await.ok()?;
    }
    if total < PROGRESS_FROM {
        return None;
    }
    let bar = crate::progress::Progress::new("sending", total, crate::progress::Unit::Items);
    let (store, shown) = (pass.store.clone(), bar.clone());
    let task = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let mut left = 0;
            for route in &routes {
                left += store.count_due(route, now).await.unwrap_or(0);
            }
            shown.set(total.saturating_sub(left));
        }
    });
    Some((bar, task))
}

/// `--every`: one pass per interval on the real clock, never two at once, until SIGTERM or
/// Ctrl-C. A pass that fails (the database is down) is logged and the next interval tries
/// again; a configuration mistake stops the loop at start, as it stops a single pass.
async fn every_interval(
    mode: Mode,
    args: &PassArgs,
    every: &str,
    env: HashMap<String, String>,
) -> anyhow::Result<ExitCode> {
    let interval = crate::config::parse_duration(every)
        .map_err(|e| anyhow::anyhow!("--every: {e}"))
        .and_then(|d| {
            anyhow::ensure!(d >= Duration::from_secs(1), "--every: must be at least 1s");
            Ok(d)
        })?;
    let configured = super::configure(&args.common, &env)?;
    let stop = Arc::new(Stop::default());
    let signals = tokio::spawn(stop_on_signal(stop.clone()));
    let began = Instant::now();
    let mut store: Option<Arc<dyn Store>> = None;
    let mut ticks = tokio::time::interval(interval);
    // A pass longer than the interval delays the next one; missed ticks are not made up.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(
        "{} every {} ({}); SIGTERM or Ctrl-C stops after the pass in progress",
        mode.name(),
        every.trim(),
        configured.settings.database_url
    );
    let mut number: u64 = 0;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.wait() => {}
        }
        if stop.requested() {
            break;
        }
        number += 1;
        let started = Instant::now();
        // The business clock: the real one, or `--now` moving forward from the loop's start.
        let clock = match args.common.now {
            None => Clock::system(),
            Some(at) => Clock::starting_at(
                at + chrono::Duration::from_std(began.elapsed()).unwrap_or_default(),
            ),
        };
        let current = match &store {
            Some(s) => s.clone(),
            None => match super::open(&configured.settings, &args.common).await {
                Ok(s) => {
                    store = Some(s.clone());
                    s
                }
                Err(e) => {
                    tracing::error!(
                        "pass {number} could not start: {}; trying again in {}",
                        crate::logging::causes(&e),
                        every.trim()
                    );
                    crate::heartbeat::beat(configured.settings.heartbeat.as_ref(), false).await;
                    continue;
                }
            },
        };
        let pass = Pass {
            mode,
            args,
            settings: &configured.settings,
            templates: &configured.templates,
            registry: &configured.registry,
            store: current,
            clock,
            stop: stop.clone(),
        };
        match recorded(&pass).await {
            Ok(report) => {
                let t = report.totals();
                let secs = started.elapsed().as_secs_f64();
                match report.deliver.as_ref().and_then(|d| d.halted.as_deref()) {
                    None => tracing::info!(
                        "pass {number}: generated {}, sent {}, failed {}, retried {}, deferred \
                         {}, cancelled {}, skipped {} in {secs:.1}s",
                        t.generated,
                        t.sent,
                        t.failed,
                        t.retried,
                        t.deferred,
                        t.cancelled,
                        t.skipped
                    ),
                    Some(why) => tracing::error!(
                        "pass {number} stopped early: {why}; sent {}, failed {}; trying again \
                         in {}",
                        t.sent,
                        t.failed,
                        every.trim()
                    ),
                }
                if args.common.json {
                    emit(&report.to_json().to_string());
                }
            }
            Err(e) => {
                tracing::error!(
                    "pass {number} failed: {}; trying again in {}",
                    crate::logging::causes(&e),
                    every.trim()
                );
            }
        }
    }
    signals.abort();
    tracing::info!("stopped after {number} passes");
    Ok(ExitCode::from(super::EXIT_OK))
}

/// This host's name, for `passes`; `unknown` when it cannot be read.
fn hostname() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

/// SIGTERM or Ctrl-C: start no new sends; claimed messages go back with their attempt.
async fn stop_on_signal(stop: Arc<Stop>) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            let _ = ctrl_c.await;
            stop.request();
            return;
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::warn!("stop requested: no new sends start; claimed messages go back to pending");
    stop.request();
}
