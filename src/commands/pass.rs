//! `run`, `generate` and `send`: one pass, reported.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;

use crate::cli::PassArgs;
use crate::deliver::{Delivery, Stop};
use crate::report::{emit, PassReport};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Run,
    Generate,
    Send,
}

pub async fn run(
    mode: Mode,
    args: PassArgs,
    env: HashMap<String, String>,
) -> anyhow::Result<ExitCode> {
    let setup = super::setup(&args.common, env).await?;
    let settings = &setup.settings;
    let now = setup.clock.start();
    let mut report = PassReport {
        command: match mode {
            Mode::Run => "run",
            Mode::Generate => "generate",
            Mode::Send => "send",
        },
        now,
        timezone: settings.timezone,
        dry_run: args.dry_run,
        generate: None,
        rendered: None,
        deliver: None,
    };
    // Settings, templates and channels were checked by `setup`, before the database opened.
    let (templates, registry) = (&setup.templates, &setup.registry);
    // `--json` lists every message touched; the human summary shows the first few.
    let keep = if args.common.json { usize::MAX } else { crate::deliver::HUMAN_DETAILS };
    let stop = Arc::new(Stop::default());
    let delivery = Delivery {
        store: setup.store.clone(),
        settings,
        registry,
        templates,
        clock: setup.clock,
        stop: stop.clone(),
        all_details: args.common.json,
        journal: Some(setup.journal()),
    };
    if mode != Mode::Send {
        let generated =
            crate::generate::generate(setup.store.as_ref(), settings, now, args.dry_run, keep)
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
    if mode != Mode::Generate {
        let signals = tokio::spawn(stop_on_signal(stop));
        let delivered = if args.dry_run { delivery.preview().await } else { delivery.run().await };
        signals.abort();
        report.deliver = Some(delivered.context("delivery failed")?);
    }
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
