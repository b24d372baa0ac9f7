//! `status`: what is in the outbox and which channels can send.

use std::collections::HashMap;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::cli::Common;
use crate::config::Settings;
use crate::domain::channel::{ChannelKind, Route};
use crate::report::{emit, StatusReport, StatusRoute};

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
    // Every channel's default route, then WhatsApp's named connections, then connections that
    // messages name but the configuration does not.
    let mut routes: Vec<Route> = ChannelKind::ALL.into_iter().map(Route::of).collect();
    routes.extend(settings.connections.iter().map(|c| Route::whatsapp(&c.name)));
    let named = setup.store.due_by_connection(now).await.context("cannot read status")?;
    routes.extend(named.into_iter().filter_map(|(c, _)| c.map(|c| Route::whatsapp(&c))));
    routes.sort_by_key(|r| (r.channel, r.connection.clone()));
    routes.dedup();
    let mut channels = Vec::new();
    for route in routes {
        let provider = registry.route(&route).map(|p| p.provider().to_string()).ok_or_else(|| {
            match &route.connection {
                None => Settings::unconfigured_reason(route.channel.as_str()).to_string(),
                Some(name) => {
                    format!("no WhatsApp connection '{name}' is configured (WHATSAPP_CONNECTIONS)")
                }
            }
        });
        let due = setup.store.count_due(&route, now).await.context("cannot read status")?;
        channels.push(StatusRoute {
            channel: route.channel.as_str().to_string(),
            connection: route.connection.clone(),
            key: route.key(),
            quota: settings.route_quota(&route),
            provider,
            due,
        });
    }
    let passes = setup.store.pass_history().await.context("cannot read status")?;
    let report = StatusReport {
        now,
        timezone: settings.timezone,
        backend: setup.store.backend(),
        window: settings.send_window.to_string(),
        window_open: settings.send_window.contains(now.with_timezone(&settings.timezone).time()),
        channels,
        data,
        passes,
        stale_after: settings.stale_after,
    };
    emit(&if common.json { report.to_json().to_string() } else { report.to_text() });
    Ok(ExitCode::SUCCESS)
}
