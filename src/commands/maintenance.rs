//! `retry` and `prune`: an operator's hand on the outbox.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::json;

use crate::cli::Common;
use crate::report::{emit, escape_control, plural};
use crate::store::{PruneCut, RetrySelect};

pub async fn retry(
    common: &Common,
    ids: Vec<i64>,
    failed_since: Option<&str>,
    env: HashMap<String, String>,
) -> anyhow::Result<ExitCode> {
    let setup = super::setup(common, env).await?;
    let tz = setup.settings.timezone;
    let named = !ids.is_empty();
    let select = match failed_since {
        Some(raw) => RetrySelect::FailedSince(
            crate::domain::dates::instant(raw, tz)
                .map_err(|e| anyhow::anyhow!("--failed-since: {e}"))?,
        ),
        None => RetrySelect::Ids(ids),
    };
    let now = setup.clock.start();
    let done = setup.store.retry_failed(&select, now).await.context("cannot retry")?;
    if common.json {
        let doc = json!({
            "retried": done.retried.iter().map(|(id, channel, recipient)| json!({
                "id": id, "channel": channel, "recipient": recipient,
            })).collect::<Vec<_>>(),
            "not_retried": done.refused.iter().map(|(id, reason)| json!({
                "id": id, "reason": reason,
            })).collect::<Vec<_>>(),
        });
        emit(&doc.to_string());
    } else {
        let mut out = String::new();
        let n = done.retried.len() as u64;
        let _ = writeln!(
            out,
            "put back {} as pending; the next pass sends {}",
            plural(n, "failed message", "failed messages"),
            if n == 1 { "it" } else { "them" }
        );
        for (id, channel, recipient) in &done.retried {
            let to = recipient.as_deref().map(escape_control).unwrap_or_default();
            let _ = writeln!(out, "  #{id} {channel} {to}");
        }
        if !done.refused.is_empty() {
            let _ = writeln!(out, "not put back:");
            for (_, reason) in &done.refused {
                let _ = writeln!(out, "  {}", escape_control(reason));
            }
        }
        emit(&out);
    }
    // Every message named by id either went back or the command says it failed.
    if named && !done.refused.is_empty() {
        let k = done.refused.len();
        anyhow::bail!(
            "{k} of the named message{} could not be put back",
            if k == 1 { "" } else { "s" }
        );
    }
    Ok(ExitCode::from(super::EXIT_OK))
}

pub async fn prune(
    common: &Common,
    days: u32,
    dry_run: bool,
    env: HashMap<String, String>,
) -> anyhow::Result<ExitCode> {
    let setup = super::setup(common, env).await?;
    let settings = &setup.settings;
    let now = setup.clock.start();
    let today = crate::generate::local_today(now, settings.timezone);
    let before = now
        .checked_sub_signed(chrono::Duration::days(i64::from(days)))
        .context("--older-than reaches before the calendar")?;
    let horizon = chrono::Duration::days(settings.dunning.horizon());
    let cut = PruneCut {
        before,
        passes_days: days,
        dunning_due_until: today.checked_sub_signed(horizon).unwrap_or(today),
        visit_before: today,
    };
    let pruned = setup.store.prune(&cut, dry_run).await.context("cannot prune")?;
    if common.json {
        let doc = json!({
            "dry_run": dry_run,
            "before": before.to_rfc3339(),
            "messages": pruned.messages,
            "attempts": pruned.attempts,
            "passes": pruned.passes,
        });
        emit(&doc.to_string());
    } else {
        let verb = if dry_run { "would delete" } else { "deleted" };
        let local = before.with_timezone(&settings.timezone).format("%Y-%m-%d %H:%M");
        emit(&format!(
            "{verb} {} finished messages (with {} delivery attempts) last touched before {local} \
             whose reminders can never be generated again, and {} passes older than {days} days\n",
            pruned.messages, pruned.attempts, pruned.passes
        ));
    }
    Ok(ExitCode::from(super::EXIT_OK))
}
