//! `seed`: demo data for a first run.

use std::collections::HashMap;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::cli::Common;
use crate::report::{emit, seed_text};

pub async fn run(
    common: &Common,
    reset: bool,
    env: HashMap<String, String>,
) -> anyhow::Result<ExitCode> {
    let setup = super::setup(common, env).await?;
    let demo = crate::seed::demo_data(setup.clock.start(), setup.settings.timezone);
    let counts = setup.store.seed(&demo, reset).await.context("cannot load demo data")?;
    if common.json {
        emit(&serde_json::json!({"seeded": counts, "reset": reset}).to_string());
    } else {
        emit(&seed_text(&counts, reset));
    }
    Ok(ExitCode::SUCCESS)
}
