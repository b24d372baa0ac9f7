//! Settings from the environment, a `.env` file and flags, validated once into typed values.
//! Secrets are wrapped in [`Secret`], whose `Debug` and `Display` never show the value.

use std::fmt;

/// A credential. Printing it, by `{}` or `{:?}`, shows `[redacted]`; only `expose` gives the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The raw value, for the one place that puts it on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use chrono_tz::Tz;

use crate::channels::telegram::TelegramConfig;
use crate::channels::twilio::TwilioConfig;
use crate::domain::dunning::DunningPolicy;
use crate::domain::rate::Rate;
use crate::domain::window::SendWindow;

/// A setting that could not be used, naming the variable and what was wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub problem: String,
}

fn bad(variable: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError { variable, problem: problem.into() }
}

/// The logical channels a contact can prefer, in the order `status` lists them.
pub const CHANNELS: [&str; 3] = ["whatsapp", "telegram", "email"];

/// Where WhatsApp messages go.
#[derive(Debug, Clone)]
pub enum WhatsApp {
    Twilio(TwilioConfig),
    Log,
}

/// Where Telegram messages go.
#[derive(Debug, Clone)]
pub enum Telegram {
    Bot(TelegramConfig),
    Log,
}

/// Where email goes.
#[derive(Debug, Clone)]
pub enum Email {
    Log,
}

/// Every setting of a pass, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database_url: String,
    pub timezone: Tz,
    pub send_window: SendWindow,
    pub whatsapp: Option<WhatsApp>,
    pub telegram: Option<Telegram>,
    pub email: Option<Email>,
    pub whatsapp_rate: Rate,
    pub telegram_rate: Rate,
    pub email_rate: Rate,
    pub concurrency: usize,
    pub max_attempts: u32,
    pub service_phone: Option<String>,
    pub sender_name: Option<String>,
    pub dunning: DunningPolicy,
    pub template_dir: Option<PathBuf>,
    /// How long one pass may keep claiming new work; cron calls the next one a minute later.
    pub pass_budget: Duration,
    /// Timeout of one provider request.
    pub request_timeout: Duration,
}

pub const DEFAULT_DATABASE_URL: &str = "sqlite:reminderctl.db";

impl Settings {
    /// Reads the settings from a snapshot of the environment (with `.env` already merged in).
    pub fn from_env(env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let get = |name: &str| env.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());

        let timezone = match get("REMINDER_TIMEZONE") {
            None => chrono_tz::Asia::Jakarta,
            Some(name) => name.parse::<Tz>().map_err(|_| {
                bad("REMINDER_TIMEZONE", format!("'{name}' is not an IANA time zone"))
            })?,
        };
        let send_window = match get("REMINDER_SEND_WINDOW") {
            None => SendWindow::parse("08:00-20:00").map_err(|e| bad("REMINDER_SEND_WINDOW", e))?,
            Some(s) => SendWindow::parse(s).map_err(|e| bad("REMINDER_SEND_WINDOW", e))?,
        };
        let rate = |variable: &'static str, default: &str| {
            Rate::parse(get(variable).unwrap_or(default)).map_err(|e| bad(variable, e))
        };
        let number = |variable: &'static str, default: u64, min: u64, max: u64| match get(variable)
        {
            None => Ok(default),
            Some(s) => match s.parse::<u64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(bad(variable, format!("'{s}' is not a whole number from {min} to {max}"))),
            },
        };

        let dunning = DunningPolicy::new(
            get("REMINDER_DUNNING_BEFORE").unwrap_or("7,3,1"),
            number("REMINDER_DUNNING_FOLLOWUP_EVERY", 3, 1, 365)? as u32,
            number("REMINDER_DUNNING_FOLLOWUPS", 4, 0, 52)? as u32,
        )
        .map_err(|e| bad("REMINDER_DUNNING_BEFORE", e))?;

        Ok(Self {
            database_url: get("DATABASE_URL").unwrap_or(DEFAULT_DATABASE_URL).to_string(),
            timezone,
            send_window,
            whatsapp: whatsapp(&get)?,
            telegram: telegram(&get)?,
            email: email(&get)?,
            whatsapp_rate: rate("REMINDER_WHATSAPP_RATE", "1")?,
            telegram_rate: rate("REMINDER_TELEGRAM_RATE", "25")?,
            email_rate: rate("REMINDER_EMAIL_RATE", "10")?,
            concurrency: number("REMINDER_CONCURRENCY", 8, 1, 1024)? as usize,
            max_attempts: number("REMINDER_MAX_ATTEMPTS", 3, 1, 100)? as u32,
            service_phone: get("REMINDER_SERVICE_PHONE").map(str::to_string),
            sender_name: get("REMINDER_SENDER_NAME").map(str::to_string),
            dunning,
            template_dir: get("REMINDER_TEMPLATE_DIR").map(PathBuf::from),
            pass_budget: Duration::from_secs(number("REMINDER_PASS_SECONDS", 50, 1, 3600)?),
            request_timeout: Duration::from_secs(number("REMINDER_HTTP_TIMEOUT", 15, 1, 300)?),
        })
    }

    /// The rate limit of a logical channel.
    pub fn rate(&self, channel: &str) -> Rate {
        match channel {
            "whatsapp" => self.whatsapp_rate,
            "telegram" => self.telegram_rate,
            _ => self.email_rate,
        }
    }

    /// Whether a logical channel has a provider (possibly `log`).
    pub fn is_configured(&self, channel: &str) -> bool {
        match channel {
            "whatsapp" => self.whatsapp.is_some(),
            "telegram" => self.telegram.is_some(),
            "email" => self.email.is_some(),
            _ => false,
        }
    }

    /// Why a channel has no provider, for `status` and the summary.
    pub fn unconfigured_reason(channel: &str) -> &'static str {
        match channel {
            "whatsapp" => "no WhatsApp provider configured (set WHATSAPP_PROVIDER or TWILIO_*)",
            "telegram" => "no Telegram bot configured (set TELEGRAM_BOT_TOKEN)",
            "email" => "no mailer configured (set MAIL_MAILER=log)",
            _ => "unknown channel",
        }
    }
}

fn whatsapp<'a>(get: &impl Fn(&str) -> Option<&'a str>) -> Result<Option<WhatsApp>, ConfigError> {
    let twilio_set = get("TWILIO_ACCOUNT_SID").is_some() || get("TWILIO_AUTH_TOKEN").is_some();
    let provider = match get("WHATSAPP_PROVIDER") {
        Some(p) => p.to_ascii_lowercase(),
        None if twilio_set => "twilio".to_string(),
        None => return Ok(None),
    };
    match provider.as_str() {
        "log" => Ok(Some(WhatsApp::Log)),
        "twilio" => {
            let need = |name: &'static str| {
                get(name).map(str::to_string).ok_or_else(|| bad(name, "is required for Twilio"))
            };
            Ok(Some(WhatsApp::Twilio(TwilioConfig {
                account_sid: need("TWILIO_ACCOUNT_SID")?,
                auth_token: Secret::new(need("TWILIO_AUTH_TOKEN")?),
                from: need("TWILIO_WHATSAPP_FROM")?,
                api_base: base_url(get, "TWILIO_API_BASE", "https://api.twilio.com")?,
            })))
        }
        other => Err(bad(
            "WHATSAPP_PROVIDER",
            format!("'{other}' is not a provider this version supports (twilio, log)"),
        )),
    }
}

fn telegram<'a>(get: &impl Fn(&str) -> Option<&'a str>) -> Result<Option<Telegram>, ConfigError> {
    match get("TELEGRAM_PROVIDER").map(str::to_ascii_lowercase).as_deref() {
        Some("log") => return Ok(Some(Telegram::Log)),
        Some("telegram" | "bot") | None => {}
        Some(other) => {
            return Err(bad("TELEGRAM_PROVIDER", format!("'{other}' is not one of: telegram, log")))
        }
    }
    let Some(token) = get("TELEGRAM_BOT_TOKEN") else { return Ok(None) };
    Ok(Some(Telegram::Bot(TelegramConfig {
        bot_token: Secret::new(token),
        api_base: base_url(get, "TELEGRAM_API_BASE", "https://api.telegram.org")?,
    })))
}

fn email<'a>(get: &impl Fn(&str) -> Option<&'a str>) -> Result<Option<Email>, ConfigError> {
    match get("MAIL_MAILER").map(str::to_ascii_lowercase).as_deref() {
        Some("log") => Ok(Some(Email::Log)),
        None => Ok(None),
        Some(other) => Err(bad(
            "MAIL_MAILER",
            format!("'{other}' is not a mailer this version supports (log)"),
        )),
    }
}

/// A provider base URL: http(s), no trailing slash. The value is echoed in errors only when it
/// cannot be parsed, and then without its query (which could carry a key).
fn base_url<'a>(
    get: &impl Fn(&str) -> Option<&'a str>,
    variable: &'static str,
    default: &str,
) -> Result<String, ConfigError> {
    let raw = get(variable).unwrap_or(default);
    match url::Url::parse(raw) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            Ok(raw.trim_end_matches('/').to_string())
        }
        _ => Err(bad(variable, "is not an http(s) URL")),
    }
}
