//! Results to stdout: one `Report` value, rendered as the human summary or as one JSON document.
//! Logs go to stderr through `tracing`; this is the only module that prints to stdout.

use std::borrow::Cow;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::{json, Value};

use crate::generate::GenerateReport;
use crate::store::{GenRow, PassHistory, PassRecord, SeedCounts, StatusData};

/// The counts every pass reports.
pub type Totals = crate::store::PassCounts;

/// What a pass command (`run`, `generate`, `send`) did.
#[derive(Debug, Clone)]
pub struct PassReport {
    pub command: &'static str,
    pub now: DateTime<Utc>,
    pub timezone: Tz,
    pub dry_run: bool,
    pub generate: Option<GenerateReport>,
    /// In a dry run: the rows generation would create, rendered as they would be sent.
    pub rendered: Option<Vec<Detail>>,
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
        provider_message_id: None,
        about: About { contact_id: row.contact_id, date: row.event_date, ..About::default() },
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
                t.deferred += c.deferred;
                t.cancelled += c.cancelled;
                t.skipped += c.skipped;
            }
        }
        t
    }

    /// Every message the pass touched: generated rows, cancellations, then deliveries.
    fn details(&self) -> Vec<Detail> {
        let mut out = Vec::new();
        // A row generated and then delivered in the same pass is listed once, as delivered.
        let delivered: std::collections::HashSet<i64> =
            self.deliver.iter().flat_map(|d| d.details.iter().filter_map(|x| x.id)).collect();
        if let Some(g) = &self.generate {
            match &self.rendered {
                Some(rendered) => out.extend(rendered.iter().cloned()),
                None => out.extend(
                    g.rows()
                        .filter(|r| r.id.is_none_or(|id| !delivered.contains(&id)))
                        .map(gen_detail),
                ),
            }
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
            "deferred": t.deferred,
            "cancelled": t.cancelled,
            "skipped": t.skipped,
            "rules": self.generate.as_ref().map(|g| &g.lines),
            "unreadable": self.generate.as_ref().map(|g| &g.unreadable),
            "channels": self.deliver.as_ref().map(|d| &d.channels),
            "send_window": self.deliver.as_ref().and_then(|d| d.window_closed.clone()),
            "late_results": self.deliver.as_ref().map_or(0, |d| d.late),
            "unrecorded_results": self.deliver.as_ref().map_or(0, |d| d.unrecorded),
            "journaled_results": self.deliver.as_ref().map_or(0, |d| d.journaled),
            "replayed_results": self.deliver.as_ref().map_or(0, |d| d.replayed),
            "halted": self.deliver.as_ref().and_then(|d| d.halted.clone()),
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
            if !g.unreadable.is_empty() {
                let _ = writeln!(
                    out,
                    "  {} input row(s) cannot be read, so no reminder can be made for them:",
                    g.unreadable.len()
                );
                for bad in g.unreadable.iter().take(crate::deliver::HUMAN_DETAILS) {
                    let _ = writeln!(out, "    {}", escape_control(&bad.to_string()));
                }
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
                    Some(p) => format!("{} ({})", escape_control(&c.channel), escape_control(p)),
                    None => escape_control(&c.channel).into_owned(),
                };
                let mut parts = vec![
                    format!("sent {}", c.sent),
                    format!("failed {}", c.failed),
                    format!("retried {}", c.retried),
                    format!("deferred {}", c.deferred),
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
                    let _ = write!(out, " ({})", escape_control(note));
                }
                out.push('\n');
            }
            if d.late > 0 {
                let _ = writeln!(out, "  {} result(s) arrived after their lease ended", d.late);
            }
            if d.replayed > 0 {
                let _ = writeln!(
                    out,
                    "  wrote {} result(s) an earlier pass could not store (from the journal)",
                    d.replayed
                );
            }
            if let Some(why) = &d.halted {
                let _ = writeln!(out, "  STOPPED SENDING: {why}");
            }
            if d.unrecorded > 0 {
                let kept = if d.journaled == d.unrecorded {
                    "all kept in the local journal; the next pass writes them before it sends"
                        .to_string()
                } else {
                    format!(
                        "{} kept in the local journal; the rest come back when their lease \
                         ends and may be sent again",
                        d.journaled
                    )
                };
                let _ = writeln!(
                    out,
                    "  {} result(s) could not be written to the database: {kept}",
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
                let id = format!("#{}", d.id.map_or_else(|| "-".to_string(), |i| i.to_string()));
                write_detail(&mut out, d, &id, self.dry_run);
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
            "\nTotal: generated {}, sent {}, failed {}, retried {}, deferred {}, cancelled {}, \
             skipped {}",
            t.generated, t.sent, t.failed, t.retried, t.deferred, t.cancelled, t.skipped
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
    /// Each route (a channel, and WhatsApp's connections) with its provider, or why it has none.
    pub channels: Vec<StatusRoute>,
    pub data: StatusData,
    pub passes: PassHistory,
    /// `REMINDER_STALE_AFTER`.
    pub stale_after: std::time::Duration,
}

/// One route as `status` shows it.
#[derive(Debug, Clone)]
pub struct StatusRoute {
    pub channel: String,
    /// A named WhatsApp connection; `None` is the channel's default.
    pub connection: Option<String>,
    /// Where its shared state is kept (`whatsapp:gudang`).
    pub key: String,
    pub provider: Result<String, String>,
    pub due: u64,
    pub quota: Option<u64>,
}

impl StatusRoute {
    /// The quota used this month, if it counts this month.
    fn used<'a>(&self, data: &'a StatusData) -> Option<(&'a str, i64)> {
        let slot = data.slots.iter().find(|s| s.channel == self.key)?;
        Some((slot.quota_month.as_deref()?, slot.quota_used))
    }
}

impl StatusReport {
    pub fn to_json(&self) -> Value {
        json!({
            "now": self.now.to_rfc3339(),
            "timezone": self.timezone.name(),
            "database": self.backend,
            "send_window": {"window": self.window, "open": self.window_open},
            "channels": self.channels.iter().map(|r| {
                let down = self.data.down.iter().find(|d| d.channel == r.key);
                json!({
                    "channel": r.channel,
                    "connection": r.connection,
                    "provider": r.provider.as_ref().ok(),
                    "not_configured": r.provider.as_ref().err(),
                    "down": down.map(|d| json!({"reason": d.reason, "since": d.since.to_rfc3339()})),
                    "rate_limit_wait_seconds": self.data.slots.iter().find(|s| s.channel == r.key)
                        .map(|s| s.next_free_in.as_secs_f64()),
                    "due": r.due,
                    "monthly_quota": r.quota.map(|limit| {
                        let (month, used) = r.used(&self.data).unwrap_or(("", 0));
                        json!({"limit": limit, "used": used, "month": month})
                    }),
                })
            }).collect::<Vec<_>>(),
            "counts": self.data.counts.iter().map(|c| json!({
                "kind": c.kind, "status": c.status, "channel": c.channel, "count": c.count,
            })).collect::<Vec<_>>(),
            "failures": self.data.failures.iter().map(|f| json!({
                "id": f.id, "kind": f.kind, "stage": f.stage, "channel": f.channel,
                "recipient": f.recipient, "status": f.status, "error": f.error,
                "at": f.at.to_rfc3339(),
            })).collect::<Vec<_>>(),
            "unreadable": self.data.bad_inputs,
            "last_pass": self.passes.last.as_ref().map(|p| self.pass_json(p)),
            "last_good_pass": self.passes.last_ok.as_ref().map(|p| self.pass_json(p)),
            "stale": self.stale(),
            "stale_after_seconds": self.stale_after.as_secs(),
        })
    }

    /// Whether no pass finished well within `REMINDER_STALE_AFTER` (on the real clock).
    pub fn stale(&self) -> bool {
        self.passes.last_ok.as_ref().and_then(|p| p.finished_at).is_none_or(|at| {
            self.passes.real_now.signed_duration_since(at).to_std().unwrap_or_default()
                > self.stale_after
        })
    }

    fn pass_json(&self, p: &PassRecord) -> Value {
        let age = |at: DateTime<Utc>| {
            self.passes.real_now.signed_duration_since(at).num_milliseconds() as f64 / 1000.0
        };
        json!({
            "id": p.id,
            "command": p.command,
            "host": p.host,
            "pid": p.pid,
            "now": p.business_now.map(|t| t.to_rfc3339()),
            "started_at": p.started_at.to_rfc3339(),
            "finished_at": p.finished_at.map(|t| t.to_rfc3339()),
            "age_seconds": age(p.finished_at.unwrap_or(p.started_at)),
            "counts": p.counts,
            "error": p.error,
        })
    }

    fn pass_text(&self, p: &PassRecord) -> String {
        let local = |t: DateTime<Utc>| t.with_timezone(&self.timezone).format("%Y-%m-%d %H:%M:%S");
        let ago = |t: DateTime<Utc>| {
            let secs = self.passes.real_now.signed_duration_since(t).num_seconds().max(0);
            match secs {
                0..=119 => format!("{secs} s ago"),
                120..=7199 => format!("{} min ago", secs / 60),
                7200..=172_799 => format!("{} h ago", secs / 3600),
                _ => format!("{} days ago", secs / 86_400),
            }
        };
        let c = &p.counts;
        let when = match p.finished_at {
            Some(at) => format!("finished {} ({})", local(at), ago(at)),
            None => {
                format!("started {} ({}), not finished", local(p.started_at), ago(p.started_at))
            }
        };
        let business = p
            .business_now
            .map(|t| format!(" with --now {}", t.with_timezone(&self.timezone).to_rfc3339()))
            .unwrap_or_default();
        let mut line = format!(
            "`{}` on {} (pid {}){business} {when}: generated {}, sent {}, failed {}, retried {}, \
             deferred {}",
            p.command,
            escape_control(&p.host),
            p.pid,
            c.generated,
            c.sent,
            c.failed,
            c.retried,
            c.deferred
        );
        if let Some(e) = &p.error {
            let _ = write!(line, "; error: {}", escape_control(e));
        }
        line
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
        let _ = writeln!(out, "\nPasses");
        match &self.passes.last {
            None => {
                let _ = writeln!(out, "  none recorded yet");
            }
            Some(last) => {
                let _ = writeln!(out, "  last pass: {}", self.pass_text(last));
                if let Some(ok) = self.passes.last_ok.as_ref().filter(|ok| ok.id != last.id) {
                    let _ = writeln!(out, "  last good pass: {}", self.pass_text(ok));
                }
            }
        }
        if self.stale() {
            let _ = writeln!(
                out,
                "  WARNING: no pass finished without error in the last {} \
                 (REMINDER_STALE_AFTER): is cron (or run --every) running?",
                human_duration(self.stale_after)
            );
        }
        let _ = writeln!(out, "\nChannels");
        for r in &self.channels {
            let label = match &r.connection {
                None => r.channel.clone(),
                Some(c) => format!("{} {}", r.channel, escape_control(c)),
            };
            let state = match (&r.provider, self.data.down.iter().find(|d| d.channel == r.key)) {
                (Err(why), _) => format!("not configured: {why}"),
                (Ok(p), Some(d)) => format!(
                    "{p}, DOWN since {}: {}",
                    d.since.format("%Y-%m-%d %H:%M:%S UTC"),
                    escape_control(&d.reason)
                ),
                (Ok(p), None) => format!("{p}, ok"),
            };
            let held = self
                .data
                .slots
                .iter()
                .find(|s| s.channel == r.key && !s.next_free_in.is_zero())
                .map(|s| {
                    format!(
                        "; held by the rate limit: next send slot in {:.0} s",
                        s.next_free_in.as_secs_f64().ceil()
                    )
                })
                .unwrap_or_default();
            let quota = r
                .quota
                .map(|limit| match r.used(&self.data) {
                    Some((month, used)) => format!("; quota {used} of {limit} used in {month}"),
                    None => format!("; quota {limit} a month, none used yet"),
                })
                .unwrap_or_default();
            let _ = writeln!(out, "  {label:<16} {state}; {} due now{held}{quota}", r.due);
        }
        let _ = writeln!(out, "\nMessages (kind, status, channel: count)");
        if self.data.counts.is_empty() {
            let _ = writeln!(out, "  none yet");
        }
        for c in &self.data.counts {
            let _ = writeln!(
                out,
                "  {:<12} {:<10} {:<9} {}",
                escape_control(&c.kind),
                escape_control(&c.status),
                escape_control(&c.channel),
                c.count
            );
        }
        if !self.data.bad_inputs.is_empty() {
            let _ = writeln!(
                out,
                "\nInput rows no reminder can be made for ({})",
                self.data.bad_inputs.len()
            );
            for bad in self.data.bad_inputs.iter().take(crate::deliver::HUMAN_DETAILS) {
                let _ = writeln!(out, "  {}", escape_control(&bad.to_string()));
            }
        }
        if !self.data.failures.is_empty() {
            let _ = writeln!(out, "\nLatest failures and errors");
            for f in &self.data.failures {
                let _ = writeln!(
                    out,
                    "  #{} {} {} {} {} {}: {}",
                    f.id,
                    f.at.format("%Y-%m-%dT%H:%M:%SZ"),
                    escape_control(&f.kind),
                    escape_control(f.stage.as_deref().unwrap_or("")),
                    escape_control(&f.channel),
                    escape_control(&f.status),
                    escape_control(f.error.as_deref().unwrap_or(""))
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

/// `10 min`, `90 s`, `2 h`: a duration as the status line says it.
fn human_duration(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    if secs.is_multiple_of(3600) && secs >= 3600 {
        format!("{} h", secs / 3600)
    } else if secs.is_multiple_of(60) && secs >= 60 {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} s")
    }
}

/// `n` and the noun that fits it: `1 row`, `2 rows`.
pub fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// What `import` did, for people: the counts, then each bad row's line, column and reason.
pub fn import_text(r: &crate::import::ImportReport) -> String {
    let mut out = String::new();
    let file = escape_control(&r.file);
    let good = r.rows - r.bad_rows;
    if r.written {
        let c = &r.counts;
        let _ = write!(
            out,
            "imported {} from {file}: {} inserted, {} updated, {} unchanged ({})",
            r.table.name(),
            c.inserted,
            c.updated,
            c.unchanged,
            plural(r.rows, "row", "rows")
        );
        if r.bad_rows > 0 {
            let _ = write!(out, "; skipped {}:", plural(r.bad_rows, "bad row", "bad rows"));
        }
        out.push('\n');
    } else {
        let _ = writeln!(
            out,
            "{file}: {} of {} bad; nothing was written (fix {}, or pass --skip-bad to import \
             the other {good}):",
            r.bad_rows,
            plural(r.rows, "row is", "rows are"),
            if r.bad_rows == 1 { "it" } else { "them" },
        );
    }
    for p in &r.problems {
        let _ = writeln!(out, "  {}", escape_control(&p.to_string()));
    }
    let hidden = r.problems_total.saturating_sub(r.problems.len() as u64);
    if hidden > 0 {
        let _ =
            writeln!(out, "  … and {} not shown", plural(hidden, "more problem", "more problems"));
    }
    out
}

/// What `import` did, as one JSON document.
pub fn import_json(r: &crate::import::ImportReport) -> Value {
    json!({
        "command": "import",
        "table": r.table.name(),
        "file": r.file,
        "rows": r.rows,
        "inserted": r.counts.inserted,
        "updated": r.counts.updated,
        "unchanged": r.counts.unchanged,
        "bad_rows": r.bad_rows,
        "skip_bad": r.skip_bad,
        "written": r.written,
        "problems": r.problems,
        "problems_not_shown": r.problems_total.saturating_sub(r.problems.len() as u64),
    })
}

/// Writes a rendered result to stdout.
///
/// A stdout that is closed or full is not a failure of the command: by the time its report is
/// printed, the command's work is done (messages sent, rows written), and exit code 1 would say
/// that it could not run, so the exit code stays the command's own (0 for a completed pass).
/// A reader that went away (`reminderctl status | head -1`) is normal and only logged at debug
/// level; any other write error (a full disk) is a warning on stderr.
pub fn emit(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let written = out
        .write_all(text.as_bytes())
        .and_then(|()| if text.ends_with('\n') { Ok(()) } else { out.write_all(b"\n") })
        .and_then(|()| out.flush());
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            tracing::debug!("stdout was closed by its reader; the report was not printed");
        }
        Err(e) => tracing::warn!(
            "cannot write the report to stdout: {e}; the command's work is done, and the exit \
             code is not changed"
        ),
    }
}

/// Data (names, provider replies, errors) made safe for one line of human output: control
/// characters, which could recolour the terminal, move the cursor or fake a line of the
/// report, are shown escaped (`\n`, `\t`, `\r`, else `\u{1b}`), and so are the invisible
/// marks that reorder text (bidi controls). Everything else, emoji included, is kept.
pub fn escape_control(s: &str) -> Cow<'_, str> {
    fn escaped(c: char) -> bool {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    }
    if !s.chars().any(escaped) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if escaped(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_other_text_is_kept() {
        assert!(matches!(escape_control("Budi Santoso 🕒 Rp 150.000"), Cow::Borrowed(_)));
        assert_eq!(escape_control("a\x1b[31mred"), "a\\u{1b}[31mred");
        assert_eq!(escape_control("one\ntwo\tthree\r"), "one\\ntwo\\tthree\\r");
        assert_eq!(escape_control("\u{7f}\u{9b}\u{0}"), "\\u{7f}\\u{9b}\\u{0}");
        assert_eq!(escape_control("abc\u{202e}fed"), "abc\\u{202e}fed");
    }

    #[test]
    fn data_in_the_human_summary_cannot_reach_the_terminal_raw() {
        let evil = "\x1b]0;pwned\x07\x1b[2J";
        let report = PassReport {
            command: "send",
            now: DateTime::<Utc>::UNIX_EPOCH,
            timezone: chrono_tz::Asia::Jakarta,
            dry_run: true,
            generate: None,
            rendered: None,
            deliver: Some(DeliveryReport {
                channels: vec![ChannelLine {
                    channel: "whatsapp".into(),
                    provider: Some("waha".into()),
                    failed: 1,
                    note: Some(format!("down: {evil}")),
                    ..ChannelLine::default()
                }],
                details: vec![Detail {
                    id: Some(7),
                    kind: "dunning".into(),
                    stage: Some("T-3".into()),
                    channel: "whatsapp".into(),
                    provider: Some("waha".into()),
                    recipient: Some(format!("62812{evil}")),
                    status: "failed".into(),
                    error: Some(format!("provider said {evil}\nsecond line")),
                    provider_message_id: None,
                    about: About {
                        contact_name: Some(format!("Budi{evil}")),
                        body: Some(format!("Halo {evil}")),
                        ..About::default()
                    },
                }],
                ..DeliveryReport::default()
            }),
        };
        let text = report.to_text();
        assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text:?}");
        assert!(text.contains("provider said \\u{1b}]0;pwned\\u{7}"), "{text}");
        assert!(text.contains("\\nsecond line"), "{text}");
        assert!(text.contains("(down: \\u{1b}]0;pwned"), "{text}");
        assert!(text.contains("Budi\\u{1b}]0;pwned") && text.contains("\"Halo \\u{1b}"), "{text}");
    }
}

/// What one channel did in a delivery pass.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ChannelLine {
    pub channel: String,
    pub provider: Option<String>,
    pub sent: u64,
    pub failed: u64,
    /// Back to `pending` after a transient error, with backoff (an attempt spent).
    pub retried: u64,
    /// Back to `pending` because the provider asked to wait or the channel is down (no
    /// attempt spent).
    pub deferred: u64,
    pub cancelled: u64,
    pub skipped: u64,
    /// Claimed but given back unsent (stop requested, channel paused, window closed).
    pub released: u64,
    /// Failed or skipped here, and queued on the contact's next channel.
    pub fallback: u64,
    /// Due messages left waiting (channel not configured, window closed, rate limit).
    pub waiting: u64,
    /// Why the channel stopped or did not run.
    pub note: Option<String>,
}

/// One message touched by the pass.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Detail {
    pub id: Option<i64>,
    pub kind: String,
    pub stage: Option<String>,
    pub channel: String,
    pub provider: Option<String>,
    pub recipient: Option<String>,
    pub status: String,
    pub error: Option<String>,
    pub provider_message_id: Option<String>,
    /// Who and what it is about, as the business sees it.
    #[serde(flatten)]
    pub about: About,
}

/// The business fields of a message (seed 002's run-now summary grown up): the contact, the
/// invoice or vehicle, its date and how far away it is, and the text.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct About {
    pub contact_id: Option<i64>,
    pub contact_name: Option<String>,
    pub invoice_number: Option<String>,
    pub amount: Option<i64>,
    pub plate_no: Option<String>,
    /// The due date (dunning) or the visit date (maintenance).
    pub date: Option<chrono::NaiveDate>,
    pub days_left: Option<i64>,
    pub days_overdue: Option<i64>,
    pub scheduled_message_id: Option<i64>,
    /// The rendered text.
    pub body: Option<String>,
}

impl About {
    /// One line for a person: `Budi Santoso · INV-001 · Rp150.000 · due 2025-11-20, 3 days left`.
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        if let Some(name) = &self.contact_name {
            parts.push(name.clone());
        }
        if let Some(number) = &self.invoice_number {
            parts.push(number.clone());
        }
        if let Some(amount) = self.amount {
            parts.push(crate::domain::format::rupiah(amount));
        }
        if let Some(plate) = &self.plate_no {
            parts.push(plate.clone());
        }
        if let Some(date) = self.date {
            let when = match (self.days_left, self.days_overdue) {
                (_, Some(late)) if late > 0 => format!("{date}, {late} day(s) overdue"),
                (Some(0), _) => format!("{date}, today"),
                (Some(left), _) => format!("{date}, in {left} day(s)"),
                _ => date.to_string(),
            };
            parts.push(when);
        }
        if let Some(id) = self.scheduled_message_id {
            parts.push(format!("scheduled message {id}"));
        }
        parts.join(" · ")
    }
}

/// One message of a human summary: what and where, its status, who it is about and (`body`)
/// the start of its text. Every value is escaped: data never reaches the terminal raw.
fn write_detail(out: &mut String, d: &Detail, tag: &str, body: bool) {
    let _ = write!(
        out,
        "  {tag} {} {} {}",
        escape_control(&d.kind),
        escape_control(d.stage.as_deref().unwrap_or("")),
        escape_control(&d.channel)
    );
    if let Some(r) = &d.recipient {
        let _ = write!(out, " → {}", escape_control(r));
    }
    let _ = write!(out, ": {}", escape_control(&d.status));
    if let Some(e) = &d.error {
        let _ = write!(out, " ({})", escape_control(e));
    }
    let about = d.about.summary();
    if !about.is_empty() {
        let _ = write!(out, "\n      {}", escape_control(&about));
    }
    if let (true, Some(text)) = (body, &d.about.body) {
        let _ = write!(out, "\n      \"{}\"", escape_control(&preview_text(text, 120)));
    }
    out.push('\n');
}

/// The first `max` characters of a text on one line, with `…` when cut.
fn preview_text(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        flat
    } else {
        let cut: String = flat.chars().take(max).collect();
        format!("{cut}…")
    }
}

/// What a delivery pass did.
#[derive(Debug, Clone, Default)]
pub struct DeliveryReport {
    pub channels: Vec<ChannelLine>,
    pub details: Vec<Detail>,
    /// Set when the send window is closed: why nothing was sent.
    pub window_closed: Option<String>,
    /// Results that arrived after another pass had taken the message over.
    pub late: u64,
    /// Results that could not be written to the database.
    pub unrecorded: u64,
    /// Of those, results kept in the local journal, to be written by the next pass.
    pub journaled: u64,
    /// Results of an earlier pass written from the journal at the start of this one.
    pub replayed: u64,
    /// Why the pass stopped sending early because the database failed; the pass exits 1.
    pub halted: Option<String>,
}

/// What a `schedule` command did.
#[derive(Debug, Clone)]
pub enum Scheduled {
    Added(Vec<crate::schedule::Added>),
    Listed(Vec<crate::store::ScheduledListing>),
    Edited(crate::store::ScheduledListing),
    /// The message, and how many of its queued occurrences were cancelled with it.
    Cancelled(crate::store::ScheduledListing, u64),
}

impl Scheduled {
    pub fn to_json(&self) -> Value {
        match self {
            Scheduled::Added(added) => json!(added),
            Scheduled::Listed(rows) => json!(rows),
            Scheduled::Edited(row) => json!(row),
            Scheduled::Cancelled(row, queued) => {
                json!({"cancelled": row, "queued_cancelled": queued})
            }
        }
    }
}

/// When a scheduled message goes out, in the zone; its stored text when it cannot be read.
fn next_run(row: &crate::store::ScheduledListing, tz: Tz) -> String {
    match (row.next_run_at, &row.next_run) {
        (Some(t), _) => t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string(),
        (None, Some(raw)) => format!("'{}' (cannot be read)", escape_control(raw)),
        (None, None) => "-".to_string(),
    }
}

/// One scheduled message in a line or two, with its last delivery.
fn schedule_line(out: &mut String, row: &crate::store::ScheduledListing, tz: Tz) {
    let who = match (&row.contact_id, &row.contact_name) {
        (Some(id), Some(name)) => format!("{} (contact {id})", escape_control(name)),
        (Some(id), None) => format!("contact {id} (not found)"),
        _ => "no contact".to_string(),
    };
    let via = match &row.connection {
        Some(c) => format!("{} via {}", escape_control(&row.channel), escape_control(c)),
        None => escape_control(&row.channel).into_owned(),
    };
    let _ = writeln!(
        out,
        "#{} {} → {who}: next {}, {}, {}",
        row.id,
        escape_control(&row.status),
        next_run(row, tz),
        escape_control(&row.recurrence),
        via
    );
    let body: String = row.body.chars().take(60).collect();
    let _ = writeln!(
        out,
        "    \"{}{}\"{}",
        escape_control(&body),
        if row.body.chars().count() > 60 { "…" } else { "" },
        row.created_by.as_deref().map(|u| format!(" by {}", escape_control(u))).unwrap_or_default()
    );
    let local = |raw: &str| match DateTime::parse_from_rfc3339(raw) {
        Ok(t) => t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string(),
        Err(_) => escape_control(raw).into_owned(),
    };
    let last = match (&row.sent_at, &row.error) {
        (Some(at), None) => Some(format!(
            "last sent {}{}",
            local(at),
            row.message_id
                .as_deref()
                .map(|m| format!(" (id {})", escape_control(m)))
                .unwrap_or_default()
        )),
        (_, Some(e)) => Some(format!("last error: {}", escape_control(e))),
        (None, None) => None,
    };
    if let Some(last) = last {
        let _ = writeln!(out, "    {last}");
    }
}

/// What a `schedule` command did, for people.
pub fn schedule_text(done: &Scheduled, tz: Tz) -> String {
    let mut out = String::new();
    match done {
        Scheduled::Added(added) => {
            for a in added {
                let _ = writeln!(
                    out,
                    "scheduled message {} for {} (contact {}): {} {}, {}",
                    a.id,
                    escape_control(&a.contact_name),
                    a.contact_id,
                    if a.recurrence == "none" { "once at" } else { "first at" },
                    a.first_run.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z"),
                    if a.recurrence == "none" { "once".to_string() } else { a.recurrence.clone() },
                );
            }
        }
        Scheduled::Listed(rows) => {
            if rows.is_empty() {
                let _ = writeln!(out, "no scheduled messages");
            }
            for row in rows {
                schedule_line(&mut out, row, tz);
            }
        }
        Scheduled::Edited(row) => {
            let _ = writeln!(out, "scheduled message {} changed:", row.id);
            schedule_line(&mut out, row, tz);
        }
        Scheduled::Cancelled(row, queued) => {
            let _ = writeln!(
                out,
                "scheduled message {} cancelled{}",
                row.id,
                if *queued > 0 {
                    format!(", and {queued} queued occurrence(s) that had not gone out")
                } else {
                    String::new()
                }
            );
        }
    }
    out
}

/// What `upcoming` shows: each day and what goes out on it.
#[derive(Debug, Clone)]
pub struct UpcomingReport {
    pub now: DateTime<Utc>,
    pub timezone: Tz,
    pub days: Vec<crate::upcoming::Day>,
}

impl UpcomingReport {
    pub fn to_json(&self) -> Value {
        json!({
            "now": self.now.to_rfc3339(),
            "timezone": self.timezone.name(),
            "total": self.days.iter().map(|d| d.queued.len() + d.messages.len()).sum::<usize>(),
            "days": self.days.iter().map(|d| json!({
                "date": d.date,
                "count": d.queued.len() + d.messages.len(),
                "queued": d.queued,
                "messages": d.messages,
            })).collect::<Vec<_>>(),
        })
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let local = self.now.with_timezone(&self.timezone);
        let _ = writeln!(
            out,
            "reminderctl upcoming from {} ({}), {} day(s); nothing is written",
            local.format("%Y-%m-%d %H:%M %Z"),
            self.timezone.name(),
            self.days.len()
        );
        for day in &self.days {
            let count = day.queued.len() + day.messages.len();
            let _ = writeln!(out, "\n{} ({}): {count} message(s)", day.date, day.date.format("%a"));
            for (tag, list) in [("queued", &day.queued), ("new", &day.messages)] {
                for d in list {
                    write_detail(&mut out, d, tag, true);
                }
            }
        }
        let total: usize = self.days.iter().map(|d| d.queued.len() + d.messages.len()).sum();
        let _ = writeln!(out, "\nTotal: {total} message(s) in {} day(s)", self.days.len());
        out
    }
}
