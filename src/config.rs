//! Settings from the environment, a `.env` file and flags, validated once into typed values.
//! Secrets are wrapped in [`Secret`], whose `Debug` and `Display` never show the value.

pub use crate::secret::Secret;

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
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
    pub variable: std::borrow::Cow<'static, str>,
    pub problem: String,
}

fn bad(
    variable: impl Into<std::borrow::Cow<'static, str>>,
    problem: impl Into<String>,
) -> ConfigError {
    ConfigError { variable: variable.into(), problem: problem.into() }
}

/// A named WhatsApp connection (`WHATSAPP_CONNECTIONS`), configured like the default one with
/// its settings prefixed `WHATSAPP_<NAME>_`: a second number, another WAHA session, another
/// Fonnte device.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Lower case, as `contacts.whatsapp_connection` and `scheduled_messages.connection` name it.
    pub name: String,
    pub provider: WhatsApp,
    pub rate: Rate,
    /// Messages it may send per calendar month (`WHATSAPP_<NAME>_MONTHLY_QUOTA`).
    pub monthly_quota: Option<u64>,
}

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
    pub database_url: DatabaseUrl,
    pub timezone: Tz,
    pub send_window: SendWindow,
    /// When scheduled messages may go out (`REMINDER_SCHEDULED_SEND_WINDOW`); `None` is at their
    /// chosen time, whatever the hour: a person picked it.
    pub scheduled_window: Option<SendWindow>,
    pub whatsapp: Option<WhatsApp>,
    /// Messages the default WhatsApp connection may send per calendar month.
    pub whatsapp_quota: Option<u64>,
    /// The named WhatsApp connections, besides the default one.
    pub connections: Vec<Connection>,
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
    /// Fetched after each pass (`REMINDER_HEARTBEAT_URL`), with `/fail` after a failed one.
    pub heartbeat: Option<Heartbeat>,
    /// `status` warns when no pass finished well within this long (`REMINDER_STALE_AFTER`).
    pub stale_after: Duration,
}

/// A push monitor's URL (Healthchecks.io, Uptime Kuma). The URL is its credential: `Debug` and
/// `Display` show only its host.
#[derive(Clone)]
pub struct Heartbeat {
    url: Secret,
    host: String,
}

impl Heartbeat {
    fn parse(raw: &str) -> Result<Self, ConfigError> {
        match url::Url::parse(raw.trim()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(Self {
                host: u.host_str().unwrap_or_default().to_string(),
                url: Secret::new(raw.trim().trim_end_matches('/')),
            }),
            _ => Err(bad("REMINDER_HEARTBEAT_URL", "is not an http(s) URL")),
        }
    }

    /// The URL to fetch: as given after a pass that completed, with `/fail` after one that did
    /// not (the Healthchecks convention; Uptime Kuma takes the query string, kept after it).
    pub fn url(&self, ok: bool) -> String {
        let url = self.url.expose();
        if ok {
            return url.to_string();
        }
        match url.split_once('?') {
            Some((path, query)) => format!("{}/fail?{query}", path.trim_end_matches('/')),
            None => format!("{url}/fail"),
        }
    }
}

impl std::fmt::Debug for Heartbeat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Heartbeat({})", self.host)
    }
}

impl std::fmt::Display for Heartbeat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the heartbeat at {}", self.host)
    }
}

/// A duration as people write it: `30s`, `1m`, `10m`, `1h`, `1h30m`, or plain seconds (`90`).
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let text = raw.trim();
    let wrong = || format!("'{text}' is not a duration (e.g. 30s, 1m, 10m, 1h, 1h30m)");
    if text.is_empty() {
        return Err(wrong());
    }
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for ch in text.chars() {
        if ch.is_ascii_digit() {
            digits.push(ch);
            continue;
        }
        let unit = match ch.to_ascii_lowercase() {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(wrong()),
        };
        let n: u64 = digits.parse().map_err(|_| wrong())?;
        digits.clear();
        total = n.checked_mul(unit).and_then(|v| total.checked_add(v)).ok_or_else(wrong)?;
    }
    if !digits.is_empty() {
        return Err(wrong());
    }
    Ok(Duration::from_secs(total))
}

pub const DEFAULT_DATABASE_URL: &str = "sqlite:reminderctl.db";

/// Where the data lives. `Display` and `Debug` name the SQLite file, or the PostgreSQL host, port
/// and database, never the user or password; only `expose` gives the URL.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    url: String,
    shown: String,
}

impl DatabaseUrl {
    /// Checks a URL given by `variable` (`DATABASE_URL` or `--database-url`). The URL is never
    /// echoed in the error: it may carry a password.
    pub fn parse(raw: &str, variable: &'static str) -> Result<Self, ConfigError> {
        let url = raw.trim();
        if url.is_empty() {
            return Err(bad(variable, "is empty; give a sqlite: or postgres:// URL"));
        }
        let shown = if let Some(rest) = url.strip_prefix("sqlite:") {
            let file = rest.strip_prefix("//").unwrap_or(rest);
            let file = file.split_once('?').map_or(file, |(f, _)| f);
            if file.is_empty() {
                return Err(bad(variable, "names no SQLite file (e.g. sqlite:reminderctl.db)"));
            }
            format!("sqlite database {file}")
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let parsed = url::Url::parse(url)
                .map_err(|e| bad(variable, format!("is not a valid postgres:// URL ({e})")))?;
            let query_host =
                parsed.query_pairs().find(|(k, _)| k == "host").map(|(_, v)| v.into_owned());
            let host = match parsed.host_str().filter(|h| !h.is_empty()) {
                Some(h) => h.to_string(),
                None => query_host.unwrap_or_else(|| "localhost".into()),
            };
            let port = parsed.port().unwrap_or(5432);
            match parsed.path().trim_start_matches('/') {
                "" => format!("postgres database on {host}:{port}"),
                db => format!("postgres database {db} on {host}:{port}"),
            }
        } else {
            let scheme = url.split_once(':').map_or("", |(s, _)| s);
            let scheme = crate::report::escape_control(scheme);
            return Err(bad(
                variable,
                format!(
                    "'{scheme}:' is not supported; use sqlite:FILE or postgres://HOST/DATABASE"
                ),
            ));
        };
        Ok(Self { url: url.to_string(), shown })
    }

    /// The URL itself, for the one place that connects.
    pub fn expose(&self) -> &str {
        &self.url
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

/// Every variable reminderctl reads: the one list that unknown names are checked against, kept
/// true by a test that reads this file's source and the README.
pub const KNOWN_VARIABLES: &[&str] = &[
    "DATABASE_URL",
    "REMINDER_TIMEZONE",
    "REMINDER_SEND_WINDOW",
    "REMINDER_SCHEDULED_SEND_WINDOW",
    "REMINDER_WHATSAPP_RATE",
    "REMINDER_TELEGRAM_RATE",
    "REMINDER_EMAIL_RATE",
    "REMINDER_CONCURRENCY",
    "REMINDER_MAX_ATTEMPTS",
    "REMINDER_SERVICE_PHONE",
    "REMINDER_SENDER_NAME",
    "REMINDER_DUNNING_BEFORE",
    "REMINDER_DUNNING_FOLLOWUP_EVERY",
    "REMINDER_DUNNING_FOLLOWUPS",
    "REMINDER_TEMPLATE_DIR",
    "REMINDER_PASS_SECONDS",
    "REMINDER_HTTP_TIMEOUT",
    "REMINDER_JOURNAL_DIR",
    "REMINDER_HEARTBEAT_URL",
    "REMINDER_STALE_AFTER",
    "XDG_STATE_HOME",
    "WHATSAPP_PROVIDER",
    "WHATSAPP_CONNECTIONS",
    "WHATSAPP_MONTHLY_QUOTA",
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_WHATSAPP_FROM",
    "TWILIO_API_BASE",
    "WAHA_BASE_URL",
    "WAHA_API_KEY",
    "WAHA_SESSION",
    "WAHA_CHECK_NUMBER",
    "FONNTE_TOKEN",
    "FONNTE_API_BASE",
    "STARSENDER_API_KEY",
    "STARSENDER_API_BASE",
    "TELEGRAM_PROVIDER",
    "TELEGRAM_BOT_TOKEN",
    "TELEGRAM_API_BASE",
    "MAIL_MAILER",
    "MAIL_HOST",
    "MAIL_PORT",
    "MAIL_USERNAME",
    "MAIL_PASSWORD",
    "MAIL_ENCRYPTION",
    "MAIL_FROM_ADDRESS",
    "MAIL_FROM_NAME",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "NO_COLOR",
];

/// The variables a command runs with: the process environment over the `.env` file, and what
/// is worth a warning about them.
#[derive(Debug, Default)]
pub struct Environment {
    pub vars: HashMap<String, String>,
    /// Warnings that do not stop the command, in the order they should be logged.
    pub warnings: Vec<String>,
}

/// The environment could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error(transparent)]
    Dotenv(#[from] crate::dotenv::DotenvError),
    #[error("{variable}: the value in the environment is not valid UTF-8")]
    NotUnicode { variable: String },
}

impl Environment {
    /// Merges the process environment (`process`, which wins) over the `.env` file at `dotenv`
    /// (which may be missing). A bad `.env` line, or a setting whose value is not UTF-8, is an
    /// error; other variables that are not UTF-8 are left out, since reminderctl reads none.
    pub fn load(
        process: impl IntoIterator<Item = (OsString, OsString)>,
        dotenv: &Path,
    ) -> Result<Self, EnvError> {
        let mut vars = HashMap::new();
        for (key, value) in process {
            let Ok(key) = key.into_string() else { continue };
            match value.into_string() {
                Ok(value) => {
                    vars.insert(key, value);
                }
                Err(_) if KNOWN_VARIABLES.contains(&key.as_str()) || key.starts_with(PREFIX) => {
                    return Err(EnvError::NotUnicode { variable: key });
                }
                Err(_) => {}
            }
        }
        let mut env = Self { vars, warnings: Vec::new() };
        let entries = crate::dotenv::load(dotenv)?.unwrap_or_default();
        let file = dotenv.display();
        let mut first_line: HashMap<&str, usize> = HashMap::new();
        let mut from_file: HashMap<&str, usize> = HashMap::new();
        for entry in &entries {
            if let Some(first) = first_line.insert(&entry.key, entry.line) {
                env.warnings.push(format!(
                    "{file} line {}: {} is set again (first on line {first}); the later value is \
                     used",
                    entry.line, entry.key
                ));
            }
            if entry.quote != crate::dotenv::Quote::Single && entry.value.contains("${") {
                env.warnings.push(format!(
                    "{file} line {}: {} contains ${{…}}, which reminderctl does not expand; the \
                     value is used as written",
                    entry.line, entry.key
                ));
            }
            from_file.insert(&entry.key, entry.line);
        }
        let mut names: Vec<&str> = env.vars.keys().map(String::as_str).collect();
        names.extend(from_file.keys().filter(|k| !env.vars.contains_key(**k)));
        names.sort_unstable();
        let mut warnings = Vec::new();
        for name in names {
            let origin = match from_file.get(name) {
                Some(line) => format!("{file} line {line}"),
                None => "the environment".to_string(),
            };
            if let Some(w) = unknown_setting(name, from_file.contains_key(name), &origin) {
                warnings.push(w);
            }
        }
        env.warnings.extend(warnings);
        // A later line wins over an earlier one, and the process environment over the file.
        let file_values: HashMap<String, String> =
            entries.into_iter().map(|e| (e.key, e.value)).collect();
        for (key, value) in file_values {
            env.vars.entry(key).or_insert(value);
        }
        Ok(env)
    }
}

/// The prefix of reminderctl's own settings: any other name with it is a mistake.
const PREFIX: &str = "REMINDER_";

/// A warning for a variable reminderctl does not read but probably should: any `REMINDER_*`
/// name, and (in `.env`, where every line is meant for someone) a name one or two edits away
/// from a known one. Other variables belong to other programs and are left alone.
fn unknown_setting(name: &str, in_dotenv: bool, origin: &str) -> Option<String> {
    // Only these can warn; every other variable of the process is passed over without
    // comparing it with every known name.
    if KNOWN_VARIABLES.contains(&name) || !(in_dotenv || name.starts_with(PREFIX)) {
        return None;
    }
    let (closest, distance) = KNOWN_VARIABLES
        .iter()
        .map(|known| (*known, edit_distance(name, known)))
        .min_by_key(|(_, d)| *d)?;
    let name = crate::report::escape_control(name);
    if name.starts_with(PREFIX) {
        Some(if distance <= 3 {
            format!("unknown setting {name} ({origin}) is ignored; did you mean {closest}?")
        } else {
            format!(
                "unknown setting {name} ({origin}) is ignored; the closest known setting is \
                 {closest} (see the README's configuration table)"
            )
        })
    } else if in_dotenv && distance <= 2 && name.len() >= 8 {
        Some(format!("unknown setting {name} ({origin}) is ignored; did you mean {closest}?"))
    } else {
        None
    }
}

/// Edits (insert, delete, replace, swap two neighbours) that turn `a` into `b`: a transposed
/// pair like `RAET` for `RATE` counts as one typo.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

impl Settings {
    /// Reads the settings from a snapshot of the environment (with `.env` already merged in).
    pub fn from_env(env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        Self::load(env, None)
    }

    /// Reads the settings, with `--database-url` (when given) in place of `DATABASE_URL`.
    pub fn load(
        env: &HashMap<String, String>,
        database_url_flag: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let get = |name: &str| env.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());

        // An empty URL is a mistake (a variable left blank, `--database-url "$UNSET"`), not a
        // request for the default database.
        let database_url = match (database_url_flag, env.get("DATABASE_URL")) {
            (Some(flag), _) => DatabaseUrl::parse(flag, "--database-url")?,
            (None, Some(url)) => DatabaseUrl::parse(url, "DATABASE_URL")?,
            (None, None) => DatabaseUrl::parse(DEFAULT_DATABASE_URL, "DATABASE_URL")?,
        };

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
            database_url,
            timezone,
            send_window,
            scheduled_window: match get("REMINDER_SCHEDULED_SEND_WINDOW") {
                None => None,
                Some(s) => Some(
                    SendWindow::parse(s).map_err(|e| bad("REMINDER_SCHEDULED_SEND_WINDOW", e))?,
                ),
            },
            whatsapp: whatsapp(&get)?,
            whatsapp_quota: quota(get("WHATSAPP_MONTHLY_QUOTA"), "WHATSAPP_MONTHLY_QUOTA".into())?,
            connections: connections(&get, rate("REMINDER_WHATSAPP_RATE", "1")?)?,
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
            heartbeat: get("REMINDER_HEARTBEAT_URL").map(Heartbeat::parse).transpose()?,
            stale_after: match get("REMINDER_STALE_AFTER") {
                None => Duration::from_secs(600),
                Some(s) => match parse_duration(s) {
                    Ok(d) if d >= Duration::from_secs(1) => d,
                    Ok(_) => return Err(bad("REMINDER_STALE_AFTER", "must be at least 1s")),
                    Err(e) => return Err(bad("REMINDER_STALE_AFTER", e)),
                },
            },
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

    /// The rate limit of a route: a named WhatsApp connection's own, else its channel's.
    pub fn route_rate(&self, route: &crate::domain::channel::Route) -> Rate {
        match &route.connection {
            Some(name) => self
                .connections
                .iter()
                .find(|c| &c.name == name)
                .map_or(self.whatsapp_rate, |c| c.rate),
            None => self.rate(route.channel.as_str()),
        }
    }

    /// The monthly quota of a route, if it has one.
    pub fn route_quota(&self, route: &crate::domain::channel::Route) -> Option<u64> {
        match (&route.connection, route.channel) {
            (Some(name), _) => {
                self.connections.iter().find(|c| &c.name == name).and_then(|c| c.monthly_quota)
            }
            (None, crate::domain::channel::ChannelKind::WhatsApp) => self.whatsapp_quota,
            (None, _) => None,
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

/// A monthly quota: a whole number of messages.
fn quota(value: Option<&str>, variable: String) -> Result<Option<u64>, ConfigError> {
    value
        .map(|v| {
            v.parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| bad(variable, format!("'{v}' is not a whole number of messages")))
        })
        .transpose()
}

/// The named WhatsApp connections. Each reads the default's variables with `WHATSAPP_<NAME>_`
/// before them (`WHATSAPP_PROVIDER` becomes `WHATSAPP_<NAME>_PROVIDER`).
fn connections<'a>(
    get: &impl Fn(&str) -> Option<&'a str>,
    default_rate: Rate,
) -> Result<Vec<Connection>, ConfigError> {
    let Some(list) = get("WHATSAPP_CONNECTIONS") else { return Ok(Vec::new()) };
    let mut out: Vec<Connection> = Vec::new();
    for raw in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let name = raw.to_ascii_lowercase();
        let valid = name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid || name == "default" {
            return Err(bad(
                "WHATSAPP_CONNECTIONS",
                format!(
                    "'{raw}' is not a connection name (letters, digits and _; 'default' is the \
                     unnamed connection)"
                ),
            ));
        }
        if out.iter().any(|c| c.name == name) {
            return Err(bad("WHATSAPP_CONNECTIONS", format!("'{raw}' is listed twice")));
        }
        let prefix = format!("WHATSAPP_{}_", name.to_ascii_uppercase());
        let prefixed = |variable: &str| -> String {
            format!("{prefix}{}", variable.strip_prefix("WHATSAPP_").unwrap_or(variable))
        };
        let named_get = |variable: &str| get(&prefixed(variable));
        let rename = |mut e: ConfigError| {
            e.variable = prefixed(&e.variable).into();
            e
        };
        let provider = whatsapp(&named_get).map_err(rename)?.ok_or_else(|| {
            bad(
                prefixed("WHATSAPP_PROVIDER"),
                format!("is required for the WhatsApp connection '{name}', with its settings"),
            )
        })?;
        let rate = match get(&format!("{prefix}RATE")) {
            None => default_rate,
            Some(r) => Rate::parse(r).map_err(|e| bad(format!("{prefix}RATE"), e))?,
        };
        let monthly_quota =
            quota(named_get("WHATSAPP_MONTHLY_QUOTA"), prefixed("WHATSAPP_MONTHLY_QUOTA"))?;
        out.push(Connection { name, provider, rate, monthly_quota });
    }
    Ok(out)
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

    #[test]
    fn every_variable_read_here_is_in_the_known_list_and_the_readme() {
        let sources = [include_str!("config.rs"), include_str!("logging.rs")];
        let mut read = Vec::new();
        for source in sources {
            // The code, not its tests (which are full of misspelt names on purpose).
            let code = source.split("#[cfg(test)]").next().unwrap();
            for piece in code.split('"').skip(1).step_by(2) {
                let looks_like_one = piece.len() > 3
                    && piece.contains('_')
                    && piece
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit());
                if looks_like_one && !piece.starts_with('_') && !piece.ends_with('_') {
                    read.push(piece);
                }
            }
        }
        for name in read {
            assert!(KNOWN_VARIABLES.contains(&name), "{name} is read but not in KNOWN_VARIABLES");
        }
        let readme = include_str!("../README.md");
        for name in KNOWN_VARIABLES {
            assert!(readme.contains(&format!("`{name}`")), "{name} is not in the README");
        }
    }

    #[test]
    fn durations_read_as_people_write_them() {
        for (raw, secs) in [
            ("30s", 30),
            ("1m", 60),
            ("10m", 600),
            ("1h", 3600),
            ("1h30m", 5400),
            ("90", 90),
            (" 2H ", 7200),
            ("1d", 86_400),
        ] {
            assert_eq!(parse_duration(raw), Ok(Duration::from_secs(secs)), "{raw}");
        }
        for raw in ["", "soon", "1x", "m", "1m30", "-1m", "99999999999999999999h"] {
            assert!(parse_duration(raw).is_err(), "{raw}");
        }
    }

    #[test]
    fn the_heartbeat_fails_on_the_path_keeps_its_query_and_shows_only_its_host() {
        let hc = Heartbeat::parse("https://hc-ping.com/5f3a-uuid/").unwrap();
        assert_eq!(hc.url(true), "https://hc-ping.com/5f3a-uuid");
        assert_eq!(hc.url(false), "https://hc-ping.com/5f3a-uuid/fail");
        let kuma =
            Heartbeat::parse("https://kuma.example.com/api/push/tok?status=up&msg=OK").unwrap();
        assert_eq!(kuma.url(false), "https://kuma.example.com/api/push/tok/fail?status=up&msg=OK");
        for shown in [format!("{hc}"), format!("{hc:?}"), format!("{kuma:?}")] {
            assert!(!shown.contains("5f3a") && !shown.contains("tok"), "{shown}");
        }
        assert!(Heartbeat::parse("hc-ping.com/5f3a").is_err());
        assert!(Heartbeat::parse("ftp://hc-ping.com/5f3a").is_err());
        let e = Heartbeat::parse("x 5f3a-secret").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("REMINDER_HEARTBEAT_URL") && !e.contains("5f3a"), "{e}");
    }

    #[test]
    fn a_typo_in_a_reminder_setting_names_the_closest_known_one() {
        let w = unknown_setting("REMINDER_WHATSAPP_RAET", false, "the environment").unwrap();
        assert_eq!(
            w,
            "unknown setting REMINDER_WHATSAPP_RAET (the environment) is ignored; did you mean \
             REMINDER_WHATSAPP_RATE?"
        );
        let w = unknown_setting("REMINDER_TIMEZON", true, ".env line 2").unwrap();
        assert!(w.ends_with("did you mean REMINDER_TIMEZONE?"), "{w}");
        let w = unknown_setting("REMINDER_PAGER_ENDPOINT", false, "the environment").unwrap();
        assert!(w.contains("the closest known setting is REMINDER_"), "{w}");
        assert_eq!(unknown_setting("REMINDER_TIMEZONE", false, "the environment"), None);
    }

    #[test]
    fn other_programs_variables_are_left_alone_but_near_misses_in_dotenv_are_not() {
        assert_eq!(unknown_setting("HOME", false, "the environment"), None);
        assert_eq!(unknown_setting("APP_KEY", true, ".env line 1"), None);
        assert_eq!(unknown_setting("WHATSAPP_PROVDER", false, "the environment"), None);
        let w = unknown_setting("WHATSAPP_PROVDER", true, ".env line 4").unwrap();
        assert!(w.ends_with("did you mean WHATSAPP_PROVIDER?"), "{w}");
    }

    #[test]
    fn a_transposition_is_one_edit() {
        assert_eq!(edit_distance("RAET", "RATE"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    fn os(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
    }

    #[test]
    fn the_environment_wins_over_dotenv_and_dotenv_fills_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        std::fs::write(
            &path,
            "REMINDER_TIMEZONE=Asia/Makassar\nREMINDER_SENDER_NAME=Tim Wikarta Provider\n",
        )
        .unwrap();
        let env = Environment::load(os(&[("REMINDER_TIMEZONE", "Asia/Jayapura")]), &path).unwrap();
        assert_eq!(env.vars["REMINDER_TIMEZONE"], "Asia/Jayapura");
        assert_eq!(env.vars["REMINDER_SENDER_NAME"], "Tim Wikarta Provider");
        assert!(env.warnings.is_empty(), "{:?}", env.warnings);
        let env = Environment::load(os(&[]), &dir.path().join("missing.env")).unwrap();
        assert!(env.vars.is_empty());
    }

    #[test]
    fn dotenv_warnings_name_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        std::fs::write(
            &path,
            "REMINDER_WHATSAPP_RAET=2/min\nA=1\nA=2\nURL=${BASE}/x\nLIT='${BASE}'\n",
        )
        .unwrap();
        let env = Environment::load(os(&[("REMINDER_SEND_WINDOOW", "x")]), &path).unwrap();
        let file = path.display();
        assert_eq!(
            env.warnings,
            [
                format!("{file} line 3: A is set again (first on line 2); the later value is used"),
                format!(
                    "{file} line 4: URL contains ${{…}}, which reminderctl does not expand; the \
                     value is used as written"
                ),
                "unknown setting REMINDER_SEND_WINDOOW (the environment) is ignored; did you \
                 mean REMINDER_SEND_WINDOW?"
                    .to_string(),
                format!(
                    "unknown setting REMINDER_WHATSAPP_RAET ({file} line 1) is ignored; did you \
                     mean REMINDER_WHATSAPP_RATE?"
                ),
            ]
        );
        assert_eq!(env.vars["A"], "2");
    }

    #[test]
    fn a_bad_dotenv_line_is_an_error_naming_file_line_and_variable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        std::fs::write(&path, "A=1\nREMINDER_SENDER_NAME='Tim\n").unwrap();
        let e = Environment::load(os(&[]), &path).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{} line 2: REMINDER_SENDER_NAME: the single quote (') that opens the value is \
                 never closed",
                path.display()
            )
        );
    }

    #[test]
    #[cfg(unix)]
    fn a_setting_that_is_not_utf8_is_an_error_and_other_variables_are_skipped() {
        use std::os::unix::ffi::OsStringExt as _;
        let bad = OsString::from_vec(vec![0xff, 0xfe]);
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join(".env");
        let env = Environment::load(vec![("OTHER".into(), bad.clone())], &missing).unwrap();
        assert!(env.vars.is_empty());
        let e = Environment::load(vec![("REMINDER_SENDER_NAME".into(), bad)], &missing);
        assert_eq!(
            e.unwrap_err().to_string(),
            "REMINDER_SENDER_NAME: the value in the environment is not valid UTF-8"
        );
    }

    #[test]
    fn an_empty_database_url_is_an_error_naming_where_it_came_from() {
        assert_eq!(settings(&[("DATABASE_URL", "")]).unwrap_err().variable, "DATABASE_URL");
        assert_eq!(settings(&[("DATABASE_URL", "  ")]).unwrap_err().variable, "DATABASE_URL");
        let env = HashMap::new();
        let e = Settings::load(&env, Some("")).unwrap_err();
        assert_eq!(e.to_string(), "--database-url: is empty; give a sqlite: or postgres:// URL");
        // The flag wins over the variable, even a bad one.
        let env: HashMap<String, String> =
            [("DATABASE_URL".to_string(), "mysql://x".to_string())].into();
        let s = Settings::load(&env, Some("sqlite:other.db")).unwrap();
        assert_eq!(s.database_url.expose(), "sqlite:other.db");
        assert_eq!(settings(&[]).unwrap().database_url.expose(), DEFAULT_DATABASE_URL);
    }

    #[test]
    fn a_database_url_is_shown_without_its_password() {
        let url = |u: &str| DatabaseUrl::parse(u, "DATABASE_URL").map(|d| d.to_string());
        assert_eq!(url("sqlite:reminderctl.db").unwrap(), "sqlite database reminderctl.db");
        assert_eq!(
            url("sqlite:///var/lib/r.db?mode=rwc").unwrap(),
            "sqlite database /var/lib/r.db"
        );
        assert_eq!(
            url("postgres://app:hunter2@db.internal:6432/reminders").unwrap(),
            "postgres database reminders on db.internal:6432"
        );
        assert_eq!(
            url("postgresql://app:hunter2@10.0.0.5/app").unwrap(),
            "postgres database app on 10.0.0.5:5432"
        );
        let d = DatabaseUrl::parse("postgres://app:hunter2@h/db", "DATABASE_URL").unwrap();
        assert!(!format!("{d:?} {d}").contains("hunter2"));
        let e = url("mysql://root:hunter2@h/x").unwrap_err().to_string();
        assert_eq!(
            e,
            "DATABASE_URL: 'mysql:' is not supported; use sqlite:FILE or postgres://HOST/DATABASE"
        );
        assert!(url("sqlite:").is_err());
        let e = url("postgres://app:hunter2@[bad/x").unwrap_err().to_string();
        assert!(
            e.starts_with("DATABASE_URL: is not a valid postgres:// URL") && !e.contains("hunter2"),
            "{e}"
        );
    }
}
