//! The command line. The doc comment on each flag is its `--help` text.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Cron-driven payment, maintenance and scheduled reminders over WhatsApp, Telegram and email.
///
/// Each call makes one bounded, idempotent pass and exits; call `run` from cron every minute.
/// Settings come from the environment or a `.env` file in the working directory.
#[derive(Debug, Parser)]
#[command(name = "reminderctl", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate what is due, then deliver it: one pass. This is what cron calls.
    Run(PassArgs),
    /// Create every message that is due now in the outbox; send nothing.
    Generate(PassArgs),
    /// Deliver due outbox messages (pending, retry time reached, inside the send window).
    Send(PassArgs),
    /// Load demo data dated relative to now; running it twice adds nothing twice.
    Seed {
        #[command(flatten)]
        common: Common,
        /// Remove earlier demo rows (and their messages) first, then add them anew.
        #[arg(long)]
        reset: bool,
    },
    /// Send one WhatsApp message now, after asking for confirmation.
    TestWhatsapp {
        #[command(flatten)]
        common: Common,
        /// Recipient in any Indonesian format (0812…, +62 812…, 62812…).
        phone: String,
        /// The text to send.
        message: String,
        /// Send without asking (needed when stdin is not a terminal).
        #[arg(long)]
        yes: bool,
    },
    /// Create (or reuse) a test customer with an invoice due in 3 days, and deliver its T-3
    /// reminder by email and WhatsApp now, after asking for confirmation.
    TestDunning {
        #[command(flatten)]
        common: Common,
        /// The test customer's email address (an existing customer with it is reused).
        email: String,
        /// The test customer's phone number, for WhatsApp.
        phone: String,
        /// Send without asking (needed when stdin is not a terminal).
        #[arg(long)]
        yes: bool,
    },
    /// Create, list, edit and cancel scheduled messages (seed 004's dialog, on the command line).
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// What the rules and schedules will send each day of the next days: to whom, on which
    /// channel, which stage, and the text. Writes nothing.
    Upcoming {
        #[command(flatten)]
        common: Common,
        /// How many days to look ahead, today included.
        #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=366))]
        days: u32,
    },
    /// Counts of messages by kind, status and channel; channel health; the latest failures.
    Status {
        #[command(flatten)]
        common: Common,
        /// How many of the latest failures to show.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(0..=1000))]
        failures: u16,
    },
    /// Import contacts, invoices, vehicles or scheduled messages from another system's CSV
    /// export. Every row is checked first: if one is bad, nothing is written. Rows are then
    /// upserted by their `ref`, so importing the same file again changes nothing.
    Import(ImportArgs),
    /// Put failed messages back as pending, with fresh attempts, for the next pass to send.
    #[command(group = clap::ArgGroup::new("which").required(true).args(["ids", "failed_since"]))]
    Retry {
        #[command(flatten)]
        common: Common,
        /// The messages' ids (as `status` and `--json` show them).
        #[arg(value_name = "ID")]
        ids: Vec<i64>,
        /// Every message that failed at or after this time (RFC 3339, `YYYY-MM-DD HH:MM` or
        /// `YYYY-MM-DD` in `REMINDER_TIMEZONE`).
        #[arg(long, value_name = "TIME")]
        failed_since: Option<String>,
    },
    /// Delete finished outbox rows older than DAYS whose reminder can never be generated
    /// again (so nothing is sent twice), their attempts, and passes older than DAYS.
    Prune {
        #[command(flatten)]
        common: Common,
        /// How old a finished message (and a recorded pass) must be, in days.
        #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..=36500))]
        older_than: u32,
        /// Count what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// `import`'s arguments.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// What the file holds (invoices, vehicles and scheduled messages name their contact by
    /// `contact_ref`: import contacts first).
    #[arg(value_enum)]
    pub table: ImportTarget,
    /// The CSV file: UTF-8, comma-separated, with a header line naming the columns.
    #[arg(value_name = "FILE.csv")]
    pub file: PathBuf,
    /// Import the good rows and list the bad ones, instead of writing nothing.
    #[arg(long)]
    pub skip_bad: bool,
    #[command(flatten)]
    pub common: Common,
}

/// The tables `import` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImportTarget {
    Contacts,
    Invoices,
    Vehicles,
    Scheduled,
}

/// `schedule add|list|edit|cancel`.
#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Schedule a message for one or more contacts: one row per contact. Prints the new ids.
    Add {
        #[command(flatten)]
        common: Common,
        /// The contact's id, or several separated by commas (`1,2,3`).
        #[arg(long, value_name = "ID[,ID…]", value_delimiter = ',', required = true)]
        contact: Vec<i64>,
        /// When: RFC 3339 (2025-11-18T09:00:00+07:00), or local `YYYY-MM-DD HH:MM` in
        /// `REMINDER_TIMEZONE`.
        #[arg(long, value_name = "TIME")]
        at: String,
        /// The text; it may use the contact's fields: {{ name }}, {{ phone }}, {{ email }}.
        #[arg(long)]
        body: String,
        /// Repeat it: daily, weekly or monthly (a monthly one keeps its day, clamped to short
        /// months).
        #[arg(long, value_name = "RECURRENCE")]
        every: Option<String>,
        /// The channel: whatsapp (default), telegram, email, or several joined by +
        /// (whatsapp+email) with , for fallbacks.
        #[arg(long)]
        channel: Option<String>,
        /// The WhatsApp connection that sends it (`WHATSAPP_CONNECTIONS`); default: the contact's.
        #[arg(long)]
        connection: Option<String>,
        /// A public URL of an image or document to send with it.
        #[arg(long, value_name = "URL")]
        media_url: Option<String>,
        /// The caption of the media (the text when the body is empty).
        #[arg(long)]
        caption: Option<String>,
        /// Who schedules it: only they may edit or cancel it with --created-by.
        #[arg(long, value_name = "USER")]
        created_by: Option<String>,
    },
    /// List scheduled messages: next run, recurrence, status and last delivery.
    List {
        #[command(flatten)]
        common: Common,
        /// Only this contact's.
        #[arg(long, value_name = "ID")]
        contact: Option<i64>,
        /// Only this user's.
        #[arg(long, value_name = "USER")]
        created_by: Option<String>,
    },
    /// Change a scheduled message; what was queued but not sent yet follows the change.
    Edit {
        #[command(flatten)]
        common: Common,
        /// The scheduled message's id.
        id: i64,
        /// The new text.
        #[arg(long)]
        body: Option<String>,
        /// The new time (RFC 3339, or local `YYYY-MM-DD HH:MM`).
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
        /// The new recurrence: none, daily, weekly or monthly.
        #[arg(long, value_name = "RECURRENCE")]
        every: Option<String>,
        /// The new channel.
        #[arg(long)]
        channel: Option<String>,
        /// The new WhatsApp connection (`default` for the default one).
        #[arg(long)]
        connection: Option<String>,
        /// The new media URL (an empty value removes it).
        #[arg(long, value_name = "URL")]
        media_url: Option<String>,
        /// The new caption.
        #[arg(long)]
        caption: Option<String>,
        /// Edit only if this user scheduled it.
        #[arg(long, value_name = "USER")]
        created_by: Option<String>,
    },
    /// Cancel a scheduled message; what was queued but not sent yet is not sent.
    Cancel {
        #[command(flatten)]
        common: Common,
        /// The scheduled message's id.
        id: i64,
        /// Cancel only if this user scheduled it.
        #[arg(long, value_name = "USER")]
        created_by: Option<String>,
    },
}

/// Flags of every command that touches the database.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Evaluate as if it were this instant (RFC 3339, e.g. 2025-11-18T09:00:00+07:00).
    #[arg(long, value_name = "TIMESTAMP", value_parser = parse_now)]
    pub now: Option<DateTime<Utc>>,
    /// Print one JSON document on stdout instead of the human summary.
    #[arg(long)]
    pub json: bool,
    /// Database URL (`sqlite:…` or `postgres://…`); overrides `DATABASE_URL`.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Do not apply pending migrations at start.
    #[arg(long)]
    pub no_migrate: bool,
}

/// Flags of the pass commands.
#[derive(Debug, Clone, Args)]
pub struct PassArgs {
    #[command(flatten)]
    pub common: Common,
    /// Show what would be generated and sent; write nothing and send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Exit with status 3 when any message failed permanently in this pass.
    #[arg(long)]
    pub strict: bool,
    /// Stay in the foreground and make one pass per interval (30s, 1m, 1h), for hosts with no
    /// cron; SIGTERM or Ctrl-C ends it after the pass in progress, with exit status 0.
    #[arg(long, value_name = "DURATION", conflicts_with = "dry_run")]
    pub every: Option<String>,
}

fn parse_now(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s.trim()).map(|t| t.with_timezone(&Utc)).map_err(|e| {
        format!("'{s}' is not an RFC 3339 timestamp ({e}); e.g. 2025-11-18T09:00:00+07:00")
    })
}
