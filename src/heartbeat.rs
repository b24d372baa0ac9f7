//! The push-monitor ping after each pass (`REMINDER_HEARTBEAT_URL`): Healthchecks.io and Uptime
//! Kuma hear that the scheduler ran, and raise the alarm when it stops. The ping is a GET with a
//! short timeout; whatever happens to it is logged and never changes the pass's outcome. Its URL
//! is a credential, so neither it nor a `reqwest::Error` (which carries it) is ever printed, and
//! a redirect is not followed: the request to the new address would carry the URL along (as its
//! `Referer`), to wherever the redirect points.

use std::time::Duration;

use crate::config::Heartbeat;

/// How long a ping may take, in all. A monitor that does not answer by then is not waited for.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// Pings the monitor when one is configured; what goes wrong is a warning, and nothing more.
pub async fn beat(heartbeat: Option<&Heartbeat>, ok: bool) {
    if let Some(heartbeat) = heartbeat {
        if let Err(why) = ping(heartbeat, ok).await {
            tracing::warn!("{why}");
        }
    }
}

/// One client for the life of the process: a `run --every` loop pings once a pass, and a new
/// client would load the TLS roots again each time.
fn client() -> Option<&'static reqwest::Client> {
    static CLIENT: std::sync::OnceLock<Option<reqwest::Client>> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| crate::channels::http::client(TIMEOUT).build().ok()).as_ref()
}

/// Fetches the heartbeat URL: as configured after a pass that completed, with `/fail` after one
/// that did not. Returns what went wrong, for the log; the caller carries on either way.
pub async fn ping(heartbeat: &Heartbeat, ok: bool) -> Result<(), String> {
    let client = client().ok_or_else(|| format!("{heartbeat}: no HTTP client could be built"))?;
    let reply = client.get(heartbeat.url(ok)).send().await.map_err(|e| {
        let why = if e.is_timeout() {
            format!("no answer within {} s", TIMEOUT.as_secs())
        } else if e.is_connect() {
            "could not connect".to_string()
        } else {
            "the request failed".to_string()
        };
        format!("{heartbeat} was not reached: {why}")
    })?;
    let status = reply.status();
    if status.is_success() {
        Ok(())
    } else if status.is_redirection() {
        Err(format!(
            "{heartbeat} answered HTTP {}, a redirect{}, which is not followed (the request would \
             carry the URL's token there): set REMINDER_HEARTBEAT_URL to the address it points to",
            status.as_u16(),
            crate::channels::http::redirect_target(reply.headers())
        ))
    } else {
        Err(format!("{heartbeat} answered HTTP {}", status.as_u16()))
    }
}
