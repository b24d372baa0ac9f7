//! Results to stdout: one `Report` value, rendered as the human summary or as one JSON document.
//! Logs go to stderr through `tracing`; this is the only module that prints to stdout.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::{json, Value};

use crate::deliver::{DeliveryReport, Detail};
use crate::generate::GenerateReport;
use crate::store::{GenRow, SeedCounts, StatusData};

/// The counts every pass reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    pub generated: u64,
    pub sent: u64,
    pub failed: u64,
    pub retried: u64,
    pub cancelled: u64,
    pub skipped: u64,
}

/// What a pass command (`run`, `generate`, `send`) did.
#[derive(Debug, Clone)]
pub struct PassReport {
    pub command: &'static str,
    pub now: DateTime<Utc>,
    pub timezone: Tz,
    pub dry_run: bool,
    pub generate: Option<GenerateReport>,
    pub deliver: Option<DeliveryReport>,
}

fn gen_detail(row: &GenRow) -> Detail {
    Detail {
        id: row.id,
        kind: row.kind.clone(),
        stage: row.stage.clone(),
        channel: row.channel.clone(),
        provider: None,
        recipient: None,
        status: row.status.clone(),
        error: row.error.clone(),
    }
}

impl PassReport {
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        if let Some(g) = &self.generate {
            for line in &g.lines {
                t.generated += line.queued;
                t.failed += line.failed;
                t.skipped += line.skipped;
            }
            t.cancelled += g.cancelled.len() as u64;
        }
        if let Some(d) = &self.deliver {
            for c in &d.channels {
                t.sent += c.sent;
                t.failed += c.failed;
                t.retried += c.retried;
                t.cancelled += c.cancelled;
                t.skipped += c.skipped;
            }
        }
        t
    }

    /// Every message the pass touched: generated rows, cancellations, then deliveries.
    fn details(&self) -> Vec<Detail> {
        let mut out = Vec::new();
        if let Some(g) = &self.generate {
            out.extend(g.rows().map(gen_detail));
            out.extend(g.cancelled.iter().map(gen_detail));
        }
        if let Some(d) = &self.deliver {
            out.extend(d.details.iter().cloned());
        }
        out
    }

    pub fn to_json(&self) -> Value {
        let t = self.totals();
        json!({
            "command": self.command,
            "now": self.now.to_rfc3339(),
            "timezone": self.timezone.name(),
            "dry_run": self.dry_run,
            "generated": t.generated,
            "sent": t.sent,
            "failed": t.failed,
            "retried": t.retried,
            "cancelled": t.cancelled,
            "skipped": t.skipped,
            "rules": self.generate.as_ref().map(|g| &g.lines),
            "channels": self.deliver.as_ref().map(|d| &d.channels),
            "send_window": self.deliver.as_ref().and_then(|d| d.window_closed.clone()),
            "late_results": self.deliver.as_ref().map_or(0, |d| d.late),
            "details": self.details(),
        })
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let local = self.now.with_timezone(&self.timezone);
        let _ = writeln!(
            out,
            "reminderctl {}{} at {} ({})",
            self.command,
            if self.dry_run { " --dry-run (nothing written, nothing sent)" } else { "" },
            local.format("%Y-%m-%d %H:%M:%S %Z"),
            self.timezone.name()
        );
        if let Some(g) = &self.generate {
            let _ = writeln!(out, "\nGenerate");
            for l in &g.lines {
                let window = match (l.from, l.to) {
                    (Some(a), Some(b)) if a == b => format!("{a}"),
                    (Some(a), Some(b)) => format!("{a}..{b}"),
                    _ => "now".to_string(),
                };
                let what = match l.rule {
                    "dunning" => "due",
                    "maintenance" => "visit",
                    _ => "run at or before",
                };
                let _ = writeln!(
                    out,
                    "  {:<11} {:<5} {what} {window}: found {}, queued {}, already queued {}",
                    l.rule,
                    if l.rule == "dunning" { l.stage.as_str() } else { "" },
                    l.found,
                    l.queued,
                    l.existing
                );
            }
            if !g.cancelled.is_empty() {
                let _ = writeln!(
                    out,
                    "  cancelled {} queued reminder(s) of paid or cancelled invoices",
                    g.cancelled.len()
                );
            }
        }
        if let Some(d) = &self.deliver {
            let _ = writeln!(out, "\nDeliver");
            if let Some(w) = &d.window_closed {
                let _ = writeln!(out, "  {w}");
            }
            if d.channels.is_empty() {
                let _ = writeln!(out, "  no channel is configured and nothing is due");
            }
            for c in &d.channels {
                let name = match &c.provider {
                    Some(p) => format!("{} ({p})", c.channel),
                    None => c.channel.clone(),
                };
                let mut parts = vec![
                    format!("sent {}", c.sent),
                    format!("failed {}", c.failed),
                    format!("retried {}", c.retried),
                    format!("cancelled {}", c.cancelled),
                    format!("skipped {}", c.skipped),
                ];
                if c.fallback > 0 {
                    parts.push(format!("fell back to the next channel {}", c.fallback));
                }
                if c.released > 0 {
                    parts.push(format!("released {}", c.released));
                }
                if c.waiting > 0 {
                    parts.push(format!("waiting {}", c.waiting));
                }
                let _ = write!(out, "  {name:<20} {}", parts.join(", "));
                if let Some(note) = &c.note {
                    let _ = write!(out, " ({note})");
                }
                out.push('\n');
            }
            if d.late > 0 {
                let _ = writeln!(out, "  {} result(s) arrived after their lease ended", d.late);
            }
            if d.unrecorded > 0 {
                let _ = writeln!(
                    out,
                    "  {} result(s) could not be written; they are retried when their lease ends",
                    d.unrecorded
                );
            }
        }
        let details = self.details();
        let shown: Vec<&Detail> =
            details.iter().filter(|d| d.status != "pending" || d.error.is_some()).collect();
        if !shown.is_empty() {
            let _ = writeln!(out, "\nMessages");
            for d in shown.iter().take(crate::deliver::HUMAN_DETAILS) {
                let _ = write!(
                    out,
                    "  #{} {} {} {}",
                    d.id.map_or_else(|| "-".to_string(), |i| i.to_string()),
                    d.kind,
                    d.stage.as_deref().unwrap_or(""),
                    d.channel
                );
                if let Some(r) = &d.recipient {
                    let _ = write!(out, " → {r}");
                }
                let _ = write!(out, ": {}", d.status);
                if let Some(e) = &d.error {
                    let _ = write!(out, " ({e})");
                }
                out.push('\n');
            }
            if shown.len() > crate::deliver::HUMAN_DETAILS {
                let _ = writeln!(
                    out,
                    "  … and {} more (use --json for all)",
                    shown.len() - crate::deliver::HUMAN_DETAILS
                );
            }
        }
        let t = self.totals();
        let _ = writeln!(
            out,
            "\nTotal: generated {}, sent {}, failed {}, retried {}, cancelled {}, skipped {}",
            t.generated, t.sent, t.failed, t.retried, t.cancelled, t.skipped
        );
        out
    }
}

/// What `status` shows.
#[derive(Debug, Clone)]
pub struct StatusReport {
    pub now: DateTime<Utc>,
    pub timezone: Tz,
    pub backend: &'static str,
    pub window: String,
    pub window_open: bool,
    /// Each channel with its provider, or why it has none.
    pub channels: Vec<(String, Result<String, String>)>,
    pub data: StatusData,
}

impl StatusReport {
    pub fn to_json(&self) -> Value {
        json!({
            "now": self.now.to_rfc3339(),
            "timezone": self.timezone.name(),
            "database": self.backend,
            "send_window": {"window": self.window, "open": self.window_open},
            "channels": self.channels.iter().map(|(c, p)| {
                let down = self.data.down.iter().find(|d| &d.channel == c);
                json!({
                    "channel": c,
                    "provider": p.as_ref().ok(),
                    "not_configured": p.as_ref().err(),
                    "down": down.map(|d| json!({"reason": d.reason, "since": d.since})),
                    "due": self.data.due.iter().find(|(ch, _)| ch == c).map_or(0, |(_, n)| *n),
                })
            }).collect::<Vec<_>>(),
            "counts": self.data.counts.iter().map(|c| json!({
                "kind": c.kind, "status": c.status, "channel": c.channel, "count": c.count,
            })).collect::<Vec<_>>(),
            "failures": self.data.failures.iter().map(|f| json!({
                "id": f.id, "kind": f.kind, "stage": f.stage, "channel": f.channel,
                "recipient": f.recipient, "status": f.status, "error": f.error, "at": f.at,
            })).collect::<Vec<_>>(),
        })
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let local = self.now.with_timezone(&self.timezone);
        let _ = writeln!(
            out,
            "reminderctl status at {} ({}), database: {}",
            local.format("%Y-%m-%d %H:%M:%S %Z"),
            self.timezone.name(),
            self.backend
        );
        let _ = writeln!(
            out,
            "send window {}: {}",
            self.window,
            if self.window_open { "open" } else { "closed, messages wait" }
        );
        let _ = writeln!(out, "\nChannels");
        for (c, p) in &self.channels {
            let due = self.data.due.iter().find(|(ch, _)| ch == c).map_or(0, |(_, n)| *n);
            let state = match (p, self.data.down.iter().find(|d| &d.channel == c)) {
                (Err(why), _) => format!("not configured: {why}"),
                (Ok(p), Some(d)) => format!("{p}, DOWN since {}: {}", d.since, d.reason),
                (Ok(p), None) => format!("{p}, ok"),
            };
            let _ = writeln!(out, "  {c:<9} {state}; {due} due now");
        }
        let _ = writeln!(out, "\nMessages (kind, status, channel: count)");
        if self.data.counts.is_empty() {
            let _ = writeln!(out, "  none yet");
        }
        for c in &self.data.counts {
            let _ = writeln!(out, "  {:<12} {:<10} {:<9} {}", c.kind, c.status, c.channel, c.count);
        }
        if !self.data.failures.is_empty() {
            let _ = writeln!(out, "\nLatest failures and errors");
            for f in &self.data.failures {
                let _ = writeln!(
                    out,
                    "  #{} {} {} {} {} {}: {}",
                    f.id,
                    f.at,
                    f.kind,
                    f.stage.as_deref().unwrap_or(""),
                    f.channel,
                    f.status,
                    f.error.as_deref().unwrap_or("")
                );
            }
        }
        out
    }
}

/// What `seed` did.
pub fn seed_text(counts: &SeedCounts, reset: bool) -> String {
    let mut out = String::new();
    if reset {
        let _ = writeln!(out, "removed {} earlier demo rows", counts.removed);
    }
    let _ = writeln!(
        out,
        "demo data added: {} contacts, {} invoices, {} vehicles, {} scheduled messages \
         (rows already present were left alone; `seed --reset` re-dates them)",
        counts.contacts, counts.invoices, counts.vehicles, counts.scheduled
    );
    out
}

/// Writes a rendered result to stdout.
#[allow(clippy::print_stdout)]
pub fn emit(text: &str) {
    print!("{text}");
    if !text.ends_with('\n') {
        println!();
    }
}
