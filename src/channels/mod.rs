//! Delivery channels: one trait, one adapter per provider, and the registry built from config.
//!
//! A channel reports *what happened* to one message; the delivery loop alone decides what to do
//! next (retry, back off, pause the channel, fall back). Adapters never log secrets: tokens live
//! in [`crate::config::Secret`] and token-bearing URLs are never formatted into errors.

use std::time::Duration;

use async_trait::async_trait;

pub mod email;
pub mod log;
pub mod telegram;
#[cfg(test)]
pub(crate) mod test_support;
pub mod whatsapp;

pub use whatsapp::twilio;

/// One message, addressed and rendered, ready for a provider.
#[derive(Debug, Clone)]
pub struct OutboundMessage {
    /// Outbox id, for logs only.
    pub id: i64,
    /// Normalized address: `628…` digits for WhatsApp, a chat id for Telegram, an email address.
    pub recipient: String,
    /// Email subject; other channels ignore it.
    pub subject: Option<String>,
    pub body: String,
    /// Public URL of an attachment (scheduled messages), when the channel supports one.
    pub media_url: Option<String>,
}

/// What the provider said when it accepted the message.
#[derive(Debug, Clone, Default)]
pub struct Receipt {
    pub provider_message_id: Option<String>,
}

/// The retry contract between adapters and the delivery loop (see `providers.md` §0).
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeliveryError {
    /// Worth retrying with backoff (5xx, timeout, connection refused).
    #[error("transient: {reason}")]
    Transient { reason: String, retry_after: Option<Duration> },
    /// The provider asked us to slow down; does not spend an attempt.
    #[error("rate limited: {reason}")]
    RateLimited { reason: String, retry_after: Option<Duration> },
    /// This recipient or this message can never succeed on this channel.
    #[error("permanent: {reason}")]
    Permanent { reason: String },
    /// The whole channel is unusable (bad credentials, device offline, quota gone): stop the
    /// channel for the rest of the pass without spending attempts.
    #[error("channel down: {reason}")]
    ChannelDown { reason: String },
}

impl DeliveryError {
    pub fn transient(reason: impl Into<String>) -> Self {
        Self::Transient { reason: reason.into(), retry_after: None }
    }
    pub fn permanent(reason: impl Into<String>) -> Self {
        Self::Permanent { reason: reason.into() }
    }
    pub fn channel_down(reason: impl Into<String>) -> Self {
        Self::ChannelDown { reason: reason.into() }
    }
}

/// A provider adapter. `name()` is what the outbox records as the provider (`twilio`, `log`, …).
#[async_trait]
pub trait Channel: Send + Sync {
    fn provider(&self) -> &'static str;
    async fn send(&self, message: &OutboundMessage) -> Result<Receipt, DeliveryError>;
}

/// Classifies a reqwest transport error (no HTTP response) without ever printing its URL, which
/// may carry a token (Telegram puts it in the path).
pub fn transport_error(err: &reqwest::Error) -> DeliveryError {
    let what = if err.is_timeout() {
        "request timed out"
    } else if err.is_connect() {
        "could not connect to the provider"
    } else if err.is_body() || err.is_decode() {
        "the provider's reply could not be read"
    } else {
        "the request to the provider failed"
    };
    DeliveryError::transient(what)
}

/// Parses a `Retry-After` header given in seconds.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Longest provider text kept in a reason.
pub const MAX_REASON_CHARS: usize = 300;

/// Removes a credential from provider text: a provider or a proxy in front of it may echo the
/// request, and a reason is cheap to scrub and costly to leak.
pub fn redact(text: &str, secret: Option<&crate::config::Secret>) -> String {
    match secret.map(|s| s.expose().trim()) {
        Some(secret) if !secret.is_empty() => text.replace(secret, "[redacted]"),
        _ => text.to_owned(),
    }
}

/// Provider text as one line of a reason: whitespace folded, the credential removed before the
/// cut (so that a credential split by the cut cannot survive in part), then cut.
pub fn clean(text: &str, secret: Option<&crate::config::Secret>) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    snippet(&redact(&one_line, secret), MAX_REASON_CHARS)
}

/// `628…` from `628…` or `+628…`; `None` unless what is left is all digits, because gateways
/// read commas as several targets, `|` as template variables, and `@` as a chat id.
pub fn phone_digits(raw: &str) -> Option<String> {
    let trimmed = raw.trim();
    let digits = trimmed.strip_prefix('+').unwrap_or(trimmed);
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.to_owned())
}

/// A JSON field by its exact name, else in any letter case: the Indonesian gateways are not
/// consistent (`status`/`Status`).
pub fn field<'a>(
    object: &'a serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Option<&'a serde_json::Value> {
    object
        .get(name)
        .or_else(|| object.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))
}

/// A credential as a header value marked sensitive (so no `Debug` shows it). `what` names it in
/// the error: an empty or unsendable credential takes the whole channel down.
pub fn secret_header(
    secret: &crate::config::Secret,
    what: &str,
) -> Result<reqwest::header::HeaderValue, DeliveryError> {
    let raw = secret.expose().trim();
    if raw.is_empty() {
        return Err(DeliveryError::channel_down(format!("no {what} is configured")));
    }
    let mut value = reqwest::header::HeaderValue::from_str(raw).map_err(|_| {
        DeliveryError::channel_down(format!(
            "the {what} contains characters that cannot go in an HTTP header"
        ))
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// Keeps at most `max` characters of a provider's reply for an error message.
pub fn snippet(text: &str, max: usize) -> String {
    let mut out: String = text.chars().take(max).collect();
    if text.chars().count() > max {
        out.push('…');
    }
    out
}

/// A channel that could not be set up from valid settings.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
    #[error("email: {0}")]
    Email(String),
}

/// The configured provider of each logical channel.
pub struct Registry {
    channels: Vec<(&'static str, std::sync::Arc<dyn Channel>)>,
}

impl Registry {
    /// Builds the adapters for every configured channel. The HTTP client is shared and built
    /// only when some channel needs it.
    pub fn from_settings(settings: &crate::config::Settings) -> Result<Self, SetupError> {
        use crate::config::{Email, Telegram, WhatsApp};
        use std::sync::Arc;
        use whatsapp::{fonnte, starsender, waha};

        let mut client: Option<reqwest::Client> = None;
        let mut http = || -> Result<reqwest::Client, SetupError> {
            if let Some(c) = &client {
                return Ok(c.clone());
            }
            let c = reqwest::Client::builder()
                .timeout(settings.request_timeout)
                .connect_timeout(settings.request_timeout.min(std::time::Duration::from_secs(10)))
                .user_agent(concat!("reminderctl/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| SetupError::Http(e.to_string()))?;
            client = Some(c.clone());
            Ok(c)
        };
        let mut channels: Vec<(&'static str, Arc<dyn Channel>)> = Vec::new();
        let whatsapp: Option<Arc<dyn Channel>> = match &settings.whatsapp {
            Some(WhatsApp::Twilio(c)) => {
                Some(Arc::new(twilio::TwilioChannel::new(c.clone(), http()?)))
            }
            Some(WhatsApp::Waha(c)) => Some(Arc::new(waha::WahaChannel::new(c.clone(), http()?))),
            Some(WhatsApp::Fonnte(c)) => {
                Some(Arc::new(fonnte::FonnteChannel::new(c.clone(), http()?)))
            }
            Some(WhatsApp::Starsender(c)) => {
                Some(Arc::new(starsender::StarsenderChannel::new(c.clone(), http()?)))
            }
            Some(WhatsApp::Log) => Some(Arc::new(log::LogChannel::new("whatsapp"))),
            None => None,
        };
        channels.extend(whatsapp.map(|c| ("whatsapp", c)));
        let telegram: Option<Arc<dyn Channel>> = match &settings.telegram {
            Some(Telegram::Bot(c)) => {
                Some(Arc::new(telegram::TelegramChannel::new(c.clone(), http()?)))
            }
            Some(Telegram::Log) => Some(Arc::new(log::LogChannel::new("telegram"))),
            None => None,
        };
        channels.extend(telegram.map(|c| ("telegram", c)));
        let email: Option<Arc<dyn Channel>> = match &settings.email {
            Some(Email::Smtp(c)) => {
                Some(Arc::new(email::SmtpChannel::new(c.clone()).map_err(SetupError::Email)?))
            }
            Some(Email::Log) => Some(Arc::new(log::LogChannel::new("email"))),
            None => None,
        };
        channels.extend(email.map(|c| ("email", c)));
        Ok(Self { channels })
    }

    /// A registry with the given adapters, for tests.
    pub fn with(channels: Vec<(&'static str, std::sync::Arc<dyn Channel>)>) -> Self {
        Self { channels }
    }

    pub fn get(&self, channel: &str) -> Option<std::sync::Arc<dyn Channel>> {
        self.channels.iter().find(|(name, _)| *name == channel).map(|(_, c)| c.clone())
    }

    pub fn channels(&self) -> impl Iterator<Item = (&'static str, &std::sync::Arc<dyn Channel>)> {
        self.channels.iter().map(|(n, c)| (*n, c))
    }
}
