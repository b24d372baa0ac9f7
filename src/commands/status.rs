//! `status`: what is in the outbox and which channels can send.

use std::collections::HashMap;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::cli::Common;
use crate::config::{Settings, CHANNELS};
use crate::report::{emit, StatusReport};

pub async fn run(
    common: &Common,
    failures: u16,
    env: HashMap<String, String>,
) -> anyhow::Result<ExitCode> {
    let setup = super::setup(common, env).await?;
    let settings = &setup.settings;
    let now = setup.clock.start();
    let registry = &setup.registry;
    let data = setup.store.status(now, i64::from(failures)).await.context("cannot read status")?;
    let report = StatusReport {
        now,
        timezone: settings.timezone,
        backend: setup.store.backend(),
        window: settings.send_window.to_string(),
        window_open: settings.send_window.contains(now.with_timezone(&settings.timezone).time()),
        channels: CHANNELS
            .iter()
            .map(|c| {
                let provider = registry
                    .get(c)
                    .map(|p| p.provider().to_string())
                    .ok_or_else(|| Settings::unconfigured_reason(c).to_string());
                ((*c).to_string(), provider)
            })
            .collect(),
        data,
    };
    emit(&if common.json { report.to_json().to_string() } else { report.to_text() });
    Ok(ExitCode::SUCCESS)
}
