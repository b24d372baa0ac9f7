//! Thin: parse the command line, read the environment and `.env`, set up logging, run the
//! command, map the result to an exit code (0 done, 1 could not run, 2 usage, 3 `--strict` with
//! failures).

use std::ffi::OsString;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use reminderctl::cli::Cli;
use reminderctl::config::Environment;
use reminderctl::logging::{self, LogSettings};

/// A delivery pass allocates and frees small buffers for every message (requests, replies,
/// rows); glibc's allocator spent about a sixth of the pass's CPU on them, mimalloc a fraction.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The process environment wins over `.env`; a `.env` line that cannot be read stops every
    // command, because whatever it meant to set would otherwise be silently missing.
    let dotenv = std::env::current_dir().map_or_else(|_| PathBuf::from(".env"), |d| d.join(".env"));
    let process: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let env = Environment::load(process.clone(), &dotenv);
    let log = match &env {
        Ok(env) => LogSettings::from_env(&env.vars),
        // Logging as the process environment asks, to say what is wrong with the file.
        Err(_) => LogSettings::from_env(
            &process
                .into_iter()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        ),
    };
    let fallback = LogSettings { level: "info", json: false, no_color: false };
    logging::init(log.as_ref().unwrap_or(&fallback));
    let env = match env {
        Ok(env) => env,
        Err(e) => return fail(&e.into()),
    };
    if let Err(e) = log {
        return fail(&anyhow::Error::new(e).context("configuration"));
    }
    for warning in &env.warnings {
        tracing::warn!("{warning}");
    }
    // One thread: a pass waits on the database and the providers, and on two cores it shares
    // the machine with PostgreSQL (and, in the benchmark, the provider). Measured on 20k
    // deliveries, a second worker thread cost a third more CPU in cross-thread wake-ups and
    // 10 MiB of RSS, and made the pass slower, not faster.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(&anyhow::Error::new(e).context("cannot start the runtime")),
    };
    match runtime.block_on(reminderctl::commands::dispatch(cli.command, env.vars)) {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

/// Prints the error once, `error: what: why`, so that cron mail is useful. A closed stderr is
/// no reason to panic: the exit code still says it.
fn fail(error: &anyhow::Error) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "{}", logging::error_line(error));
    ExitCode::from(1)
}
