//! Delivery channels: one trait, one adapter per provider, and the registry built from config.
//!
//! A channel reports *what happened* to one message; the delivery loop alone decides what to do
//! next (retry, back off, pause the channel, fall back). Adapters never log secrets: tokens live
//! in [`Secret`](crate::secret::Secret), token-bearing URLs are never formatted into errors, and
//! every provider text is passed through the channel's [`Redactor`] before it becomes a reason.

use std::time::Duration;

use async_trait::async_trait;

use crate::secret::Redactor;

pub mod email;
pub mod http;
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

/// A provider adapter. `provider()` is what the outbox records as the provider (`twilio`, `log`, …).
#[async_trait]
pub trait Channel: Send + Sync {
    fn provider(&self) -> &'static str;
    async fn send(&self, message: &OutboundMessage) -> Result<Receipt, DeliveryError>;
}

/// Longest provider text kept in a reason.
pub const MAX_REASON_CHARS: usize = 300;

/// Provider text as one line of a reason: credentials removed first (so that a cut through one
/// cannot leave its first part behind), then whitespace and control characters folded, then cut
/// at [`MAX_REASON_CHARS`].
pub fn clean(text: &str, redactor: &Redactor) -> String {
    clean_to(text, redactor, MAX_REASON_CHARS)
}

fn clean_to(text: &str, redactor: &Redactor, max: usize) -> String {
    snippet(&one_line(&redactor.redact(text)), max)
}

/// Runs of whitespace and control characters (CR, LF, tabs, NUL) become one space, so provider
/// text can neither break a log line nor inject a header.
pub fn one_line(text: &str) -> String {
    let spaced: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    spaced.split_whitespace().collect::<Vec<_>>().join(" ")
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
    routes: Vec<(crate::domain::channel::Route, std::sync::Arc<dyn Channel>)>,
}

impl Registry {
    /// Builds the adapters for every configured channel. The HTTP client is shared and built
    /// only when some channel needs it.
    pub fn from_settings(settings: &crate::config::Settings) -> Result<Self, SetupError> {
        use crate::config::{Email, Telegram, WhatsApp};
        use crate::domain::channel::{ChannelKind, Route};
        use std::sync::Arc;
        use whatsapp::{fonnte, starsender, waha};

        let mut client: Option<reqwest::Client> = None;
        let mut http = || -> Result<reqwest::Client, SetupError> {
            if let Some(c) = &client {
                return Ok(c.clone());
            }
            let c = self::http::client(settings.request_timeout)
                .build()
                .map_err(|e| SetupError::Http(e.to_string()))?;
            client = Some(c.clone());
            Ok(c)
        };
        let mut channels: Vec<(Route, Arc<dyn Channel>)> = Vec::new();
        let mut whatsapp = |provider: &WhatsApp| -> Result<Arc<dyn Channel>, SetupError> {
            Ok(match provider {
                WhatsApp::Twilio(c) => Arc::new(twilio::TwilioChannel::new(c.clone(), http()?)),
                WhatsApp::Waha(c) => Arc::new(waha::WahaChannel::new(c.clone(), http()?)),
                WhatsApp::Fonnte(c) => Arc::new(fonnte::FonnteChannel::new(c.clone(), http()?)),
                WhatsApp::Starsender(c) => {
                    Arc::new(starsender::StarsenderChannel::new(c.clone(), http()?))
                }
                WhatsApp::Log => Arc::new(log::LogChannel::new("whatsapp")),
            })
        };
        if let Some(provider) = &settings.whatsapp {
            channels.push((Route::of(ChannelKind::WhatsApp), whatsapp(provider)?));
        }
        for connection in &settings.connections {
            channels.push((Route::whatsapp(&connection.name), whatsapp(&connection.provider)?));
        }
        let telegram: Option<Arc<dyn Channel>> = match &settings.telegram {
            Some(Telegram::Bot(c)) => {
                Some(Arc::new(telegram::TelegramChannel::new(c.clone(), http()?)))
            }
            Some(Telegram::Log) => Some(Arc::new(log::LogChannel::new("telegram"))),
            None => None,
        };
        channels.extend(telegram.map(|c| (Route::of(ChannelKind::Telegram), c)));
        let email: Option<Arc<dyn Channel>> = match &settings.email {
            Some(Email::Smtp(c)) => {
                Some(Arc::new(email::SmtpChannel::new(c.clone()).map_err(SetupError::Email)?))
            }
            Some(Email::Log) => Some(Arc::new(log::LogChannel::new("email"))),
            None => None,
        };
        channels.extend(email.map(|c| (Route::of(ChannelKind::Email), c)));
        Ok(Self { routes: channels })
    }

    /// A channel's default provider (for WhatsApp, the unnamed connection).
    pub fn get(&self, channel: &str) -> Option<std::sync::Arc<dyn Channel>> {
        let channel = channel.parse().ok()?;
        self.route(&crate::domain::channel::Route::of(channel))
    }

    /// The provider of one route.
    pub fn route(
        &self,
        route: &crate::domain::channel::Route,
    ) -> Option<std::sync::Arc<dyn Channel>> {
        self.routes.iter().find(|(r, _)| r == route).map(|(_, c)| c.clone())
    }

    /// Every configured route, WhatsApp's connections after its default one.
    pub fn routes(
        &self,
    ) -> impl Iterator<Item = (&crate::domain::channel::Route, &std::sync::Arc<dyn Channel>)> {
        self.routes.iter().map(|(r, c)| (r, c))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::secret::Secret;

    fn redactor(secret: &str) -> Redactor {
        Redactor::new().secret(&Secret::new(secret))
    }

    #[test]
    fn a_reason_is_one_line_cut_at_the_limit_with_an_ellipsis() {
        let text = format!("line one\r\n\tline\0two {}", "x".repeat(400));
        let reason = clean(&text, &Redactor::new());
        assert!(reason.starts_with("line one line two xxx"), "{reason}");
        assert_eq!(reason.chars().count(), MAX_REASON_CHARS + 1);
        assert!(reason.ends_with('…'));
        assert_eq!(clean("short", &Redactor::new()), "short");
    }

    #[test]
    fn a_secret_cut_by_the_limit_leaves_no_part_behind() {
        let secret = "Fn7xQ2vL9pR4sT8wK3mZ";
        // The secret starts ten characters before the cut.
        let text = format!("{}{secret} tail", "x".repeat(MAX_REASON_CHARS - 10));
        let reason = clean(&text, &redactor(secret));
        assert!(!reason.contains("Fn7x"), "{reason}");
        assert!(reason.ends_with("x[redacted]…"), "{reason}");
    }

    #[test]
    fn phone_digits_are_digits_or_nothing() {
        assert_eq!(phone_digits(" +6281234567890 ").as_deref(), Some("6281234567890"));
        assert_eq!(phone_digits("6281,6282"), None);
        assert_eq!(phone_digits("+"), None);
    }

    #[test]
    fn fields_are_found_by_exact_name_first_then_in_any_case() {
        let value = serde_json::json!({"Status": false, "status": true, "REASON": "x"});
        let object = value.as_object().expect("an object");
        assert_eq!(field(object, "status"), Some(&serde_json::json!(true)));
        assert_eq!(field(object, "reason"), Some(&serde_json::json!("x")));
        assert_eq!(field(object, "id"), None);
    }

    proptest! {
        #[test]
        fn no_cut_position_lets_any_part_of_a_secret_through(
            secret in "[A-Za-z0-9_:+/=-]{8,40}",
            before in "[ .,!?<>#()~é\n\t]{0,320}",
            after in "[ .,!?<>#()~é\n\t]{0,40}",
            max in 0usize..400,
        ) {
            let text = format!("{before}{secret}{after}");
            let out = clean_to(&text, &redactor(&secret), max);
            // The surroundings share no character with the secret, so any letter, digit or
            // symbol of the secret's alphabet left in the output (outside the marker) leaked.
            let mut rest = out.replace("[redacted]", "");
            if let Some(cut) = rest.strip_suffix('…') {
                rest = cut.to_owned();
            }
            // The cut may also fall inside a marker.
            if let Some(at) = rest.rfind('[') {
                if "[redacted]".starts_with(&rest[at..]) {
                    rest.truncate(at);
                }
            }
            let leaked: String = rest.chars().filter(|c| secret.contains(*c)).collect();
            prop_assert!(leaked.is_empty(), "{:?} leaked from {:?}", leaked, out);
        }

        #[test]
        fn a_secret_never_survives_whatever_surrounds_it_and_wherever_the_cut(
            secret in "[A-Za-z0-9_:+/=-]{8,40}",
            before in any::<String>(),
            after in any::<String>(),
            max in 0usize..400,
        ) {
            let text = format!("{before}{secret}{after}");
            prop_assert!(!clean_to(&text, &redactor(&secret), max).contains(&secret));
        }
    }
}
