//! `upcoming`: the forecast of the next days, printed.

use std::collections::HashMap;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::cli::Common;
use crate::report::{emit, UpcomingReport};
use crate::upcoming::Forecast;

pub async fn run(
    common: &Common,
    days: u32,
    env: HashMap<String, String>,
) -> anyhow::Result<ExitCode> {
    let setup = super::setup(common, env).await?;
    let now = setup.clock.start();
    let forecast = Forecast {
        store: setup.store.clone(),
        settings: &setup.settings,
        registry: &setup.registry,
        templates: &setup.templates,
    };
    let days = forecast.days(now, days).await.context("cannot work out what is upcoming")?;
    let report = UpcomingReport { now, timezone: setup.settings.timezone, days };
    if common.json {
        emit(&report.to_json().to_string());
    } else {
        emit(&report.to_text());
    }
    Ok(ExitCode::from(super::EXIT_OK))
}
