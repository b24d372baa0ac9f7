//! `import`: another system's rows into the input tables.

use std::collections::HashMap;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::cli::{ImportArgs, ImportTarget};
use crate::import::{Context, Options};
use crate::report::{emit, escape_control, import_json, import_text};
use crate::store::ImportTable;

pub async fn run(args: &ImportArgs, env: HashMap<String, String>) -> anyhow::Result<ExitCode> {
    let setup = super::setup(&args.common, env).await?;
    let table = match args.table {
        ImportTarget::Contacts => ImportTable::Contacts,
        ImportTarget::Invoices => ImportTable::Invoices,
        ImportTarget::Vehicles => ImportTable::Vehicles,
        ImportTarget::Scheduled => ImportTable::Scheduled,
    };
    let file = escape_control(&args.file.display().to_string()).into_owned();
    let options = Options {
        table,
        path: &args.file,
        skip_bad: args.skip_bad,
        ctx: Context { tz: setup.settings.timezone, now: setup.clock.start() },
    };
    let report = crate::import::import(setup.store.as_ref(), &options)
        .await
        .with_context(|| format!("cannot import {file}"))?;
    emit(&if args.common.json { import_json(&report).to_string() } else { import_text(&report) });
    if !report.written {
        let s = if report.bad_rows == 1 { "" } else { "s" };
        anyhow::bail!("{file}: {} bad row{s}; nothing was written", report.bad_rows);
    }
    Ok(ExitCode::from(super::EXIT_OK))
}
