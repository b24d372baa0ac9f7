//! One file per subcommand: each turns its arguments into a call of the engine and hands back
//! what to print and the exit code. No business logic lives here.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;

use crate::channels::Registry;
use crate::cli::{Command, Common};
use crate::clock::Clock;
use crate::config::Settings;
use crate::store::Store;
use crate::templates::Templates;

mod import;
mod maintenance;
mod pass;
mod schedule;
mod seed;
mod status;
mod test_dunning;
mod test_whatsapp;
mod upcoming;

/// Exit codes of SPEC §1.
pub const EXIT_OK: u8 = 0;
pub const EXIT_STRICT_FAILURES: u8 = 3;

/// Runs one command; errors mean the pass could not run (exit 1).
pub async fn dispatch(command: Command, env: HashMap<String, String>) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run(args) => pass::run(pass::Mode::Run, args, env).await,
        Command::Generate(args) => pass::run(pass::Mode::Generate, args, env).await,
        Command::Send(args) => pass::run(pass::Mode::Send, args, env).await,
        Command::Seed { common, reset } => seed::run(&common, reset, env).await,
        Command::Status { common, failures } => status::run(&common, failures, env).await,
        Command::Schedule(command) => schedule::run(command, env).await,
        Command::Upcoming { common, days } => upcoming::run(&common, days, env).await,
        Command::TestWhatsapp { common, phone, message, yes } => {
            test_whatsapp::run(&common, &phone, &message, yes, env).await
        }
        Command::TestDunning { common, email, phone, yes } => {
            test_dunning::run(&common, &email, &phone, yes, env).await
        }
        Command::Import(args) => import::run(&args, env).await,
        Command::Retry { common, ids, failed_since } => {
            maintenance::retry(&common, ids, failed_since.as_deref(), env).await
        }
        Command::Prune { common, older_than, dry_run } => {
            maintenance::prune(&common, older_than, dry_run, env).await
        }
    }
}

/// Settings, checked templates, channels, clock and an open, migrated store: what every command
/// starts from.
pub(crate) struct Setup {
    pub settings: Settings,
    pub templates: Templates,
    pub registry: Registry,
    pub clock: Clock,
    pub store: Arc<dyn Store>,
}

/// Everything the operator configured is checked here, before the database is opened: a
/// mistake stops the command with one error naming the variable or file, and nothing is
/// generated or sent.
pub(crate) async fn setup(common: &Common, env: HashMap<String, String>) -> anyhow::Result<Setup> {
    let Configured { settings, templates, registry } = configure(common, &env)?;
    let clock = common.now.map_or_else(Clock::system, Clock::starting_at);
    let store = open(&settings, common).await?;
    Ok(Setup { settings, templates, registry, clock, store })
}

/// What the operator configured, checked, with no database opened yet.
pub(crate) struct Configured {
    pub settings: Settings,
    pub templates: Templates,
    pub registry: Registry,
}

/// Settings, templates and channels, checked: see [`setup`].
pub(crate) fn configure(
    common: &Common,
    env: &HashMap<String, String>,
) -> anyhow::Result<Configured> {
    let settings = Settings::load(env, common.database_url.as_deref()).context("configuration")?;
    // Said before the check: a misnamed file is an override that is silently not used.
    if let Some(dir) = &settings.template_dir {
        let known: Vec<&str> = Templates::names().collect();
        for file in Templates::unknown_files(dir) {
            tracing::warn!(
                "{}: {} is not a template name and is ignored (known: {})",
                dir.display(),
                crate::report::escape_control(&file),
                known.join(", ")
            );
        }
    }
    let templates = Templates::load(settings.template_dir.as_deref())?;
    let registry = Registry::from_settings(&settings).context("cannot set up the channels")?;
    Ok(Configured { settings, templates, registry })
}

/// Opens the store and, unless `--no-migrate`, applies pending migrations.
pub(crate) async fn open(settings: &Settings, common: &Common) -> anyhow::Result<Arc<dyn Store>> {
    let store = crate::store::connect(settings.database_url.expose(), settings.timezone)
        .await
        .with_context(|| format!("cannot open the {}", settings.database_url))?;
    if !common.no_migrate {
        store
            .migrate()
            .await
            .with_context(|| format!("cannot apply migrations to the {}", settings.database_url))?;
    }
    Ok(store)
}

/// The journal of results the database behind `settings` could not take.
pub(crate) fn journal(settings: &Settings) -> crate::deliver::journal::Journal {
    crate::deliver::journal::Journal::new(
        settings.journal_dir.clone(),
        settings.database_url.expose(),
    )
}

impl Setup {
    /// The journal of results this database could not take.
    pub fn journal(&self) -> crate::deliver::journal::Journal {
        journal(&self.settings)
    }
}

/// Asks before a test command sends anything. Without a terminal on stdin and without `--yes`
/// it refuses, so a stray cron line or script cannot message real people.
pub(crate) fn confirm(prompt: &str, yes: bool) -> anyhow::Result<()> {
    use std::io::IsTerminal as _;
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "refusing to send without confirmation: stdin is not a terminal (pass --yes to send)"
        );
    }
    // Asked on the terminal itself, so that a redirected stdout or stderr (a log file, a pipe)
    // neither hides the question nor makes the prompt fail.
    let term = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .and_then(|tty| Ok(console::Term::read_write_pair(tty.try_clone()?, tty)))
        .unwrap_or_else(|_| console::Term::stderr());
    let answer = dialoguer::Confirm::new()
        .with_prompt(prompt)
        .default(false)
        .interact_on(&term)
        .context("cannot ask for confirmation on the terminal")?;
    anyhow::ensure!(answer, "cancelled: nothing was sent");
    Ok(())
}
