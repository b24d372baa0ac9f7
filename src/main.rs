//! Thin: load `.env`, parse the command line, set up logging, run the command, map the result
//! to an exit code (0 done, 1 could not run, 2 usage, 3 `--strict` with failures).

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use reminderctl::cli::Cli;

fn main() -> ExitCode {
    // A missing .env is normal; the environment wins over the file.
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    init_tracing();
    let env = std::env::vars().collect();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(&anyhow::Error::new(e).context("cannot start the runtime")),
    };
    match runtime.block_on(reminderctl::commands::dispatch(cli.command, env)) {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

/// Prints the whole error chain once, `error: …: …`, so that cron mail is useful.
#[allow(clippy::print_stderr)]
fn fail(error: &anyhow::Error) -> ExitCode {
    eprintln!("error: {error:#}");
    ExitCode::from(1)
}

/// Logs go to stderr. `LOG_LEVEL` applies to reminderctl's own events; other crates log only
/// warnings, because HTTP client internals print request URLs, and Telegram's carries the token.
fn init_tracing() {
    let level = std::env::var("LOG_LEVEL").unwrap_or_else(|_| "info".into());
    let level = match level.to_ascii_lowercase().as_str() {
        l @ ("trace" | "debug" | "info" | "warn" | "error" | "off") => l.to_string(),
        _ => "info".to_string(),
    };
    let filter = EnvFilter::new(format!(
        "warn,reminderctl={level},reqwest=error,hyper=error,hyper_util=error,sqlx=warn"
    ));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json")) {
        builder.json().init();
    } else {
        builder.init();
    }
}
