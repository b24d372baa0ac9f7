//! Settings from the environment, a `.env` file and flags, validated once into typed values.
//! Secrets are wrapped in [`Secret`], whose `Debug` and `Display` never show the value.

pub use crate::secret::Secret;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use chrono_tz::Tz;

use crate::channels::email::{is_loopback_host, Encryption, SmtpConfig};
use crate::channels::telegram::TelegramConfig;
use crate::channels::whatsapp::fonnte::FonnteConfig;
use crate::channels::whatsapp::starsender::StarsenderConfig;
use crate::channels::whatsapp::twilio::TwilioConfig;
use crate::channels::whatsapp::waha::WahaConfig;
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
    Waha(WahaConfig),
    Fonnte(FonnteConfig),
    Starsender(StarsenderConfig),
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
    Smtp(SmtpConfig),
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
    /// Where results that could not be written to the database are kept until the next pass
    /// writes them (`REMINDER_JOURNAL_DIR`).
    pub journal_dir: PathBuf,
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

        let request_timeout = Duration::from_secs(number("REMINDER_HTTP_TIMEOUT", 15, 1, 300)?);
        Ok(Self {
            database_url: get("DATABASE_URL").unwrap_or(DEFAULT_DATABASE_URL).to_string(),
            timezone,
            send_window,
            whatsapp: whatsapp(&get)?,
            telegram: telegram(&get)?,
            email: email(&get, request_timeout)?,
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
            request_timeout,
            journal_dir: journal_dir(&get),
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
            "whatsapp" => {
                "no WhatsApp provider configured (set WHATSAPP_PROVIDER and its settings)"
            }
            "telegram" => "no Telegram bot configured (set TELEGRAM_BOT_TOKEN)",
            "email" => {
                "no mailer configured (set MAIL_HOST and MAIL_FROM_ADDRESS, or MAIL_MAILER=log)"
            }
            _ => "unknown channel",
        }
    }
}

/// `REMINDER_JOURNAL_DIR`, else the XDG state directory, else `.reminderctl` in the working
/// directory. Not beside the SQLite file on purpose: when its disk fills, the journal must not be
/// on the same one.
fn journal_dir<'a>(get: &impl Fn(&str) -> Option<&'a str>) -> PathBuf {
    if let Some(dir) = get("REMINDER_JOURNAL_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(state) = get("XDG_STATE_HOME") {
        return PathBuf::from(state).join("reminderctl");
    }
    if let Some(home) = get("HOME") {
        return PathBuf::from(home).join(".local/state/reminderctl");
    }
    PathBuf::from(".reminderctl")
}

/// Each WhatsApp provider and the variables whose presence means "this one is set up".
const WHATSAPP_CREDENTIALS: [(&str, &[&str]); 4] = [
    ("twilio", &["TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN"]),
    ("waha", &["WAHA_BASE_URL", "WAHA_API_KEY"]),
    ("fonnte", &["FONNTE_TOKEN"]),
    ("starsender", &["STARSENDER_API_KEY"]),
];

fn whatsapp<'a>(get: &impl Fn(&str) -> Option<&'a str>) -> Result<Option<WhatsApp>, ConfigError> {
    let provider = if let Some(p) = get("WHATSAPP_PROVIDER") {
        p.to_ascii_lowercase()
    } else {
        let set: Vec<&str> = WHATSAPP_CREDENTIALS
            .iter()
            .filter(|(_, vars)| vars.iter().any(|v| get(v).is_some()))
            .map(|(name, _)| *name)
            .collect();
        match set.as_slice() {
            [] => return Ok(None),
            [one] => (*one).to_string(),
            several => {
                return Err(bad(
                    "WHATSAPP_PROVIDER",
                    format!(
                        "settings for several WhatsApp providers are present ({}); choose one",
                        several.join(", ")
                    ),
                ))
            }
        }
    };
    let need = |name: &'static str, provider: &str| {
        get(name)
            .map(str::to_string)
            .ok_or_else(|| bad(name, format!("is required for {provider}")))
    };
    match provider.as_str() {
        "log" => Ok(Some(WhatsApp::Log)),
        "twilio" => Ok(Some(WhatsApp::Twilio(TwilioConfig {
            account_sid: need("TWILIO_ACCOUNT_SID", "Twilio")?,
            auth_token: Secret::new(need("TWILIO_AUTH_TOKEN", "Twilio")?),
            from: need("TWILIO_WHATSAPP_FROM", "Twilio")?,
            api_base: base_url(get, "TWILIO_API_BASE", Some("https://api.twilio.com"))?,
        }))),
        "waha" => Ok(Some(WhatsApp::Waha(WahaConfig {
            base_url: base_url(get, "WAHA_BASE_URL", None)?,
            api_key: get("WAHA_API_KEY").map(Secret::new),
            session: get("WAHA_SESSION").unwrap_or("default").to_string(),
            check_number: flag(get, "WAHA_CHECK_NUMBER", true)?,
        }))),
        "fonnte" => Ok(Some(WhatsApp::Fonnte(FonnteConfig {
            token: Secret::new(need("FONNTE_TOKEN", "Fonnte")?),
            api_base: base_url(get, "FONNTE_API_BASE", Some("https://api.fonnte.com"))?,
        }))),
        "starsender" => Ok(Some(WhatsApp::Starsender(StarsenderConfig {
            api_key: Secret::new(need("STARSENDER_API_KEY", "Starsender")?),
            api_base: base_url(get, "STARSENDER_API_BASE", Some("https://api.starsender.online"))?,
        }))),
        other => Err(bad(
            "WHATSAPP_PROVIDER",
            format!("'{other}' is not one of: twilio, waha, fonnte, starsender, log"),
        )),
    }
}

fn flag<'a>(
    get: &impl Fn(&str) -> Option<&'a str>,
    variable: &'static str,
    default: bool,
) -> Result<bool, ConfigError> {
    match get(variable).map(str::to_ascii_lowercase).as_deref() {
        None => Ok(default),
        Some("1" | "true" | "yes" | "on") => Ok(true),
        Some("0" | "false" | "no" | "off") => Ok(false),
        Some(other) => Err(bad(variable, format!("'{other}' is not true or false"))),
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
        api_base: base_url(get, "TELEGRAM_API_BASE", Some("https://api.telegram.org"))?,
    })))
}

fn email<'a>(
    get: &impl Fn(&str) -> Option<&'a str>,
    timeout: Duration,
) -> Result<Option<Email>, ConfigError> {
    match get("MAIL_MAILER").map(str::to_ascii_lowercase).as_deref() {
        Some("log") => return Ok(Some(Email::Log)),
        Some("smtp") => {}
        None if get("MAIL_HOST").is_some() => {}
        None => return Ok(None),
        Some(other) => {
            return Err(bad("MAIL_MAILER", format!("'{other}' is not one of: smtp, log")))
        }
    }
    let host = get("MAIL_HOST").ok_or_else(|| bad("MAIL_HOST", "is required for SMTP"))?;
    let port = match get("MAIL_PORT") {
        None => None,
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| bad("MAIL_PORT", format!("'{p}' is not a port number")))?,
        ),
    };
    // Laravel's `tls` (seed 003) means STARTTLS on 587 and implicit TLS on 465; `ssl` and
    // `smtps` mean implicit TLS. Unset, the port decides, and plain text is never the default.
    let encryption = match get("MAIL_ENCRYPTION").map(str::to_ascii_lowercase).as_deref() {
        Some("ssl" | "smtps") => Encryption::Implicit,
        Some("tls") | None if port == Some(465) => Encryption::Implicit,
        Some("tls" | "starttls") | None => Encryption::StartTls,
        Some("none" | "null" | "off" | "false") => Encryption::None,
        Some(other) => {
            return Err(bad(
                "MAIL_ENCRYPTION",
                format!("'{other}' is not one of: tls, starttls, ssl, none"),
            ))
        }
    };
    let port = port.unwrap_or(match encryption {
        Encryption::Implicit => 465,
        Encryption::StartTls => 587,
        Encryption::None => 25,
    });
    let username = get("MAIL_USERNAME").map(str::to_string);
    let password = get("MAIL_PASSWORD").map(Secret::new);
    if username.is_some() != password.is_some() {
        let missing = if username.is_some() { "MAIL_PASSWORD" } else { "MAIL_USERNAME" };
        return Err(bad(missing, "is required when the other SMTP credential is set"));
    }
    if encryption == Encryption::None && password.is_some() && !is_loopback_host(host) {
        return Err(bad(
            "MAIL_ENCRYPTION",
            format!(
                "'none' would send MAIL_PASSWORD in clear text to {host}; use tls or ssl, or \
                 send without credentials, or through a relay on this machine (localhost, \
                 127.0.0.1, ::1)"
            ),
        ));
    }
    Ok(Some(Email::Smtp(SmtpConfig {
        host: host.to_string(),
        port,
        username,
        password,
        encryption,
        from_address: get("MAIL_FROM_ADDRESS")
            .ok_or_else(|| bad("MAIL_FROM_ADDRESS", "is required for SMTP"))?
            .to_string(),
        from_name: get("MAIL_FROM_NAME").map(|n| n.trim_matches('"').to_string()),
        timeout,
    })))
}

/// A provider base URL: http(s), no trailing slash. The value is echoed in errors only when it
/// cannot be parsed, and then without its query (which could carry a key).
fn base_url<'a>(
    get: &impl Fn(&str) -> Option<&'a str>,
    variable: &'static str,
    default: Option<&str>,
) -> Result<String, ConfigError> {
    let raw = get(variable).or(default).ok_or_else(|| bad(variable, "is required"))?;
    match url::Url::parse(raw) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            Ok(raw.trim_end_matches('/').to_string())
        }
        _ => Err(bad(variable, "is not an http(s) URL")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let env = pairs.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect();
        Settings::from_env(&env)
    }

    #[test]
    fn the_one_provider_with_credentials_is_chosen() {
        let s = settings(&[("FONNTE_TOKEN", "t")]).unwrap();
        assert!(matches!(s.whatsapp, Some(WhatsApp::Fonnte(_))));
        let s = settings(&[("WAHA_BASE_URL", "http://127.0.0.1:3000")]).unwrap();
        assert!(matches!(s.whatsapp, Some(WhatsApp::Waha(ref c)) if c.session == "default"));
        assert!(settings(&[]).unwrap().whatsapp.is_none());
    }

    #[test]
    fn credentials_for_two_providers_need_an_explicit_choice() {
        let err = settings(&[("FONNTE_TOKEN", "t"), ("STARSENDER_API_KEY", "k")]).unwrap_err();
        assert_eq!(err.variable, "WHATSAPP_PROVIDER");
        assert!(err.problem.contains("fonnte, starsender"), "{err}");
        let s = settings(&[
            ("FONNTE_TOKEN", "t"),
            ("STARSENDER_API_KEY", "k"),
            ("WHATSAPP_PROVIDER", "starsender"),
        ])
        .unwrap();
        assert!(matches!(s.whatsapp, Some(WhatsApp::Starsender(_))));
    }

    #[test]
    fn a_half_configured_provider_names_the_missing_variable() {
        let err = settings(&[("TWILIO_ACCOUNT_SID", "AC1")]).unwrap_err();
        assert_eq!(err.variable, "TWILIO_AUTH_TOKEN");
        let err = settings(&[("WHATSAPP_PROVIDER", "waha")]).unwrap_err();
        assert_eq!(err.variable, "WAHA_BASE_URL");
    }

    fn smtp(pairs: &[(&str, &str)]) -> SmtpConfig {
        let mut all = vec![("MAIL_HOST", "smtp.example.com"), ("MAIL_FROM_ADDRESS", "a@b.c")];
        all.extend_from_slice(pairs);
        match settings(&all).unwrap().email {
            Some(Email::Smtp(c)) => c,
            other => panic!("not SMTP: {other:?}"),
        }
    }

    #[test]
    fn mail_encryption_follows_laravel() {
        let c = smtp(&[("MAIL_ENCRYPTION", "tls"), ("MAIL_PORT", "587")]);
        assert_eq!((c.encryption, c.port), (Encryption::StartTls, 587));
        let c = smtp(&[("MAIL_ENCRYPTION", "tls"), ("MAIL_PORT", "465")]);
        assert_eq!((c.encryption, c.port), (Encryption::Implicit, 465));
        let c = smtp(&[("MAIL_ENCRYPTION", "ssl")]);
        assert_eq!((c.encryption, c.port), (Encryption::Implicit, 465));
        let c = smtp(&[]);
        assert_eq!((c.encryption, c.port), (Encryption::StartTls, 587));
        let c = smtp(&[("MAIL_ENCRYPTION", "none"), ("MAIL_PORT", "2525")]);
        assert_eq!((c.encryption, c.port), (Encryption::None, 2525));
        let c = smtp(&[("MAIL_FROM_NAME", "\"Wikarta Provider\"")]);
        assert_eq!(c.from_name.as_deref(), Some("Wikarta Provider"));
    }

    #[test]
    fn mail_settings_that_cannot_work_are_refused() {
        assert_eq!(settings(&[("MAIL_HOST", "h")]).unwrap_err().variable, "MAIL_FROM_ADDRESS");
        let base = [("MAIL_HOST", "h"), ("MAIL_FROM_ADDRESS", "a@b.c")];
        let with = |extra: (&'static str, &'static str)| {
            let mut all = base.to_vec();
            all.push(extra);
            settings(&all).unwrap_err().variable
        };
        assert_eq!(with(("MAIL_USERNAME", "u")), "MAIL_PASSWORD");
        assert_eq!(with(("MAIL_ENCRYPTION", "maybe")), "MAIL_ENCRYPTION");
        assert_eq!(with(("MAIL_PORT", "70000")), "MAIL_PORT");
        assert!(matches!(settings(&[("MAIL_MAILER", "log")]).unwrap().email, Some(Email::Log)));
    }

    #[test]
    fn a_password_in_clear_text_to_another_machine_is_refused_naming_mail_encryption() {
        let clear = |host: &str, extra: &[(&'static str, &'static str)]| {
            let mut all = vec![
                ("MAIL_HOST", host),
                ("MAIL_FROM_ADDRESS", "a@b.c"),
                ("MAIL_ENCRYPTION", "none"),
                ("MAIL_PORT", "2525"),
            ];
            all.extend_from_slice(extra);
            settings(&all)
        };
        let credentials = [("MAIL_USERNAME", "budi"), ("MAIL_PASSWORD", "mail-secret-3")];
        for host in ["smtp.example.com", "10.0.0.5", "192.168.1.10", "::2", "localhost.example"] {
            let err = clear(host, &credentials).expect_err(host);
            assert_eq!(err.variable, "MAIL_ENCRYPTION", "{host}");
            assert!(err.problem.contains("clear text") && err.problem.contains(host), "{err}");
            assert!(!err.to_string().contains("mail-secret-3"), "{err}");
        }
        for off in ["null", "off", "false"] {
            let mut all = vec![
                ("MAIL_HOST", "smtp.example.com"),
                ("MAIL_FROM_ADDRESS", "a@b.c"),
                ("MAIL_ENCRYPTION", off),
            ];
            all.extend_from_slice(&credentials);
            assert_eq!(settings(&all).unwrap_err().variable, "MAIL_ENCRYPTION", "{off}");
        }
        // A relay on this machine, or no credentials at all, is fine.
        for host in ["localhost", "LOCALHOST", "127.0.0.1", "127.1.2.3", "::1", "[::1]"] {
            assert!(clear(host, &credentials).is_ok(), "{host}");
        }
        assert!(clear("smtp.example.com", &[]).is_ok());
        // With TLS, any host may get the password.
        let c = smtp(&[credentials[0], credentials[1], ("MAIL_ENCRYPTION", "tls")]);
        assert_eq!(c.encryption, Encryption::StartTls);
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let s = settings(&[
            ("FONNTE_TOKEN", "fonnte-secret-1"),
            ("TELEGRAM_BOT_TOKEN", "123:telegram-secret-2"),
            ("MAIL_HOST", "h"),
            ("MAIL_FROM_ADDRESS", "a@b.c"),
            ("MAIL_USERNAME", "u"),
            ("MAIL_PASSWORD", "mail-secret-3"),
        ])
        .unwrap();
        let debug = format!("{s:?}");
        for secret in ["fonnte-secret-1", "telegram-secret-2", "mail-secret-3"] {
            assert!(!debug.contains(secret), "{debug}");
        }
    }
}
