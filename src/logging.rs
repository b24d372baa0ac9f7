//! What goes to stderr: logs through `tracing` (text, or JSON lines with `LOG_FORMAT=json`), and
//! the one `error: what: why` line of a command that could not run. Cron mails whatever a job
//! prints, so both are written to read well there: colour only on a terminal, never with
//! `NO_COLOR`, JSON keys unique, causes said once.

use std::collections::HashMap;
use std::fmt;
use std::io::IsTerminal as _;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime as _, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::config::ConfigError;

const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// How logs are written, from `LOG_LEVEL`, `LOG_FORMAT` and `NO_COLOR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    pub level: &'static str,
    pub json: bool,
    pub no_color: bool,
}

impl LogSettings {
    pub fn from_env(env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let get = |name: &str| env.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
        let level = match get("LOG_LEVEL").map(str::to_ascii_lowercase) {
            None => "info",
            Some(l) => LEVELS.into_iter().find(|known| *known == l).ok_or_else(|| ConfigError {
                variable: "LOG_LEVEL".into(),
                problem: format!(
                    "'{}' is not one of: {}",
                    crate::report::escape_control(&l),
                    LEVELS.join(", ")
                ),
            })?,
        };
        let json = match get("LOG_FORMAT").map(str::to_ascii_lowercase).as_deref() {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => {
                return Err(ConfigError {
                    variable: "LOG_FORMAT".into(),
                    problem: format!(
                        "'{}' is not one of: text, json",
                        crate::report::escape_control(other)
                    ),
                })
            }
        };
        // Set at all, even empty, means no colour: the variable exists to be set and forgotten.
        Ok(Self { level, json, no_color: env.contains_key("NO_COLOR") })
    }
}

/// Colour only for a person at a terminal who did not ask for none.
pub fn use_color(stderr_is_terminal: bool, no_color: bool) -> bool {
    stderr_is_terminal && !no_color
}

/// Installs the global subscriber. `LOG_LEVEL` applies to reminderctl's own events; other crates
/// log only warnings, because HTTP client internals print request URLs, and Telegram's carries
/// the token.
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::new(format!(
        "warn,reminderctl={},reqwest=error,hyper=error,hyper_util=error,sqlx=warn",
        settings.level
    ));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = if settings.json {
        builder.event_format(JsonLines).try_init()
    } else {
        let color = use_color(std::io::stderr().is_terminal(), settings.no_color);
        builder.with_ansi(color).try_init()
    };
    // Only fails when a subscriber is already set (a test that set its own).
    drop(result);
}

/// One JSON object per event: `timestamp`, `level`, `target`, `fields` and, inside a span,
/// `spans`. Field names are made unique (`message`, `message_2`): JSON readers keep only one of
/// two equal keys, and which one differs between readers, so a field called like the event's
/// message would silently replace it.
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let mut fields = UniqueFields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let mut line = String::from("{");
        let key = |line: &mut String, name: &str, value: &str| {
            if line.len() > 1 {
                line.push(',');
            }
            line.push_str(&json_string(name));
            line.push(':');
            line.push_str(value);
        };
        key(&mut line, "timestamp", &json_string(&timestamp));
        key(&mut line, "level", &json_string(meta.level().as_str()));
        key(&mut line, "target", &json_string(meta.target()));
        let mut object = String::from("{");
        for (i, (name, value)) in fields.0.iter().enumerate() {
            if i > 0 {
                object.push(',');
            }
            object.push_str(&json_string(name));
            object.push(':');
            object.push_str(&value.to_string());
        }
        object.push('}');
        key(&mut line, "fields", &object);
        if let Some(scope) = ctx.event_scope() {
            let names: Vec<serde_json::Value> =
                scope.from_root().map(|span| span.name().into()).collect();
            key(&mut line, "spans", &serde_json::Value::from(names).to_string());
        }
        line.push('}');
        writeln!(writer, "{line}")
    }
}

fn json_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// An event's fields in order, each name used once.
#[derive(Default)]
struct UniqueFields(Vec<(String, serde_json::Value)>);

impl UniqueFields {
    fn push(&mut self, name: &str, value: serde_json::Value) {
        let taken = |n: &str| self.0.iter().any(|(k, _)| k == n);
        let mut unique = name.to_string();
        let mut n = 2;
        while taken(&unique) {
            unique = format!("{name}_{n}");
            n += 1;
        }
        self.0.push((unique, value));
    }
}

impl Visit for UniqueFields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.push(field.name(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field.name(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field.name(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field.name(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field.name(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field.name(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.push(field.name(), value.to_string().into());
    }
}

/// The line printed for a command that could not run: `error: ` and the chain of causes, each
/// said once. Wrapping an error often repeats it (`#[error("{0}")]` with `#[from]`, or a driver
/// that puts its cause in its own message), so a cause that the text so far already contains
/// is left out. Control characters are escaped: the chain can carry data.
pub fn error_line(error: &anyhow::Error) -> String {
    format!("error: {}", causes(error))
}

/// The chain of causes of `error`, each said once and escaped: [`error_line`] without its
/// `error: ` (what `passes.error` and the loop's log lines carry).
pub fn causes(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    crate::report::escape_control(&line).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::{MapAccess, Visitor};
    use std::sync::{Arc, Mutex};

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect()
    }

    #[test]
    fn colour_needs_a_terminal_and_no_no_color() {
        assert!(use_color(true, false));
        assert!(!use_color(false, false));
        assert!(!use_color(true, true));
        assert!(LogSettings::from_env(&env(&[("NO_COLOR", "")])).unwrap().no_color);
        assert!(LogSettings::from_env(&env(&[("NO_COLOR", "1")])).unwrap().no_color);
        assert!(!LogSettings::from_env(&env(&[])).unwrap().no_color);
    }

    #[test]
    fn log_settings_that_cannot_work_name_their_variable() {
        let e = LogSettings::from_env(&env(&[("LOG_LEVEL", "verbose")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "LOG_LEVEL: 'verbose' is not one of: trace, debug, info, warn, error, off"
        );
        let e = LogSettings::from_env(&env(&[("LOG_FORMAT", "jsonl")])).unwrap_err();
        assert_eq!(e.variable, "LOG_FORMAT");
        let s = LogSettings::from_env(&env(&[("LOG_LEVEL", "DEBUG"), ("LOG_FORMAT", "JSON")]));
        assert_eq!(s.unwrap(), LogSettings { level: "debug", json: true, no_color: false });
    }

    /// Keys of one JSON object, all of them, in order: `serde_json`'s own maps keep only the
    /// last of two equal keys, which is what this has to catch.
    struct Keys(Vec<String>);

    impl<'de> serde::Deserialize<'de> for Keys {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Keys;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                    let mut keys = Vec::new();
                    while let Some((k, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                        keys.push(k);
                    }
                    Ok(Keys(keys))
                }
            }
            d.deserialize_map(V)
        }
    }

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_have_unique_keys_even_when_a_field_is_called_message() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .event_format(JsonLines)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("pass", command = "run");
            let _entered = span.enter();
            tracing::info!(message = 42, channel = "whatsapp", channel = "again", "sent");
            tracing::warn!(error = %"boom \u{1b}[31m", "not sent");
        });
        let out = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        for line in &lines {
            let top: Keys = serde_json::from_str(line).unwrap();
            assert_eq!(top.0, ["timestamp", "level", "target", "fields", "spans"], "{line}");
            let doc: serde_json::Value = serde_json::from_str(line).unwrap();
            let fields: Keys = serde_json::from_value(doc["fields"].clone()).unwrap();
            let mut unique = fields.0.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), fields.0.len(), "duplicate keys in {line}");
        }
        let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(first["fields"]["message"], "sent");
        assert_eq!(first["fields"]["message_2"], 42);
        assert_eq!(first["fields"]["channel_2"], "again");
        assert_eq!(first["level"], "INFO");
        assert_eq!(first["spans"], serde_json::json!(["pass"]));
        let second: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(second["fields"]["error"], "boom \u{1b}[31m");
    }

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Repeats(#[from] std::io::Error);

    #[test]
    fn an_error_chain_says_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "unable to open database file");
        let e = anyhow::Error::new(Repeats(io)).context("cannot open the sqlite database x.db");
        assert_eq!(
            error_line(&e),
            "error: cannot open the sqlite database x.db: unable to open database file"
        );
        let e = anyhow::anyhow!("bad \u{1b}[2J value\nnext").context("configuration");
        assert_eq!(error_line(&e), "error: configuration: bad \\u{1b}[2J value\\nnext");
    }
}
