//! Thin: parse the command line, read the environment and `.env`, set up logging, run the
//! command, map the result to an exit code (0 done, 1 could not run, 2 usage, 3 `--strict` with
//! failures).

use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use reminderctl::cli::Cli;
use reminderctl::config::Environment;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The process environment wins over `.env`; a `.env` line that cannot be read stops every
    // command, because whatever it meant to set would otherwise be silently missing.
    let dotenv = std::env::current_dir().map_or_else(|_| PathBuf::from(".env"), |d| d.join(".env"));
    let env = match Environment::load(std::env::vars_os(), &dotenv) {
        Ok(env) => env,
        Err(e) => return fail(&e.into()),
    };
    init_tracing(&env.vars);
    for warning in &env.warnings {
        tracing::warn!("{warning}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
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
    let _ = writeln!(std::io::stderr(), "{}", reminderctl::logging::error_line(error));
    ExitCode::from(1)
}

/// Logs go to stderr. `LOG_LEVEL` applies to reminderctl's own events; other crates log only
/// warnings, because HTTP client internals print request URLs, and Telegram's carries the token.
fn init_tracing(env: &HashMap<String, String>) {
    let level = env.get("LOG_LEVEL").map_or("info", String::as_str);
    let level = match level.to_ascii_lowercase().as_str() {
        l @ ("trace" | "debug" | "info" | "warn" | "error" | "off") => l.to_string(),
        _ => "info".to_string(),
    };
    let filter = EnvFilter::new(format!(
        "warn,reminderctl={level},reqwest=error,hyper=error,hyper_util=error,sqlx=warn"
    ));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if env.get("LOG_FORMAT").is_some_and(|f| f.eq_ignore_ascii_case("json")) {
        builder.json().init();
    } else {
        builder.init();
    }
}
