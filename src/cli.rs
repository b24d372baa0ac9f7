//! The command line. The doc comment on each flag is its `--help` text.

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};

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
    /// Counts of messages by kind, status and channel; channel health; the latest failures.
    Status {
        #[command(flatten)]
        common: Common,
        /// How many of the latest failures to show.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(0..=1000))]
        failures: u16,
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
}

fn parse_now(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s.trim()).map(|t| t.with_timezone(&Utc)).map_err(|e| {
        format!("'{s}' is not an RFC 3339 timestamp ({e}); e.g. 2025-11-18T09:00:00+07:00")
    })
}
