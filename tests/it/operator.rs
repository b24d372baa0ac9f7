//! What an operator meets: `.env` read like the tools they know, one clear error for each
//! mistake before anything is generated or sent, warnings for names that are probably typos, and
//! output that reads well in cron mail (no colour, no raw control characters, no panics on a
//! closed stdout, JSON log lines with unique keys).

use std::collections::HashSet;
use std::fmt;
use std::io::Write as _;
use std::process::{Output, Stdio};

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::both;
use crate::helpers::{contact, invoice, TestDb};

const NOW: &str = "2025-11-17T09:00:00+07:00";

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs the binary with its database and everything else given only by `.env`.
async fn run_with_dotenv(db: &TestDb, dotenv: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    std::fs::write(db.dir.path().join(".env"), dotenv).expect("write .env");
    let mut cmd = db.command(args, env);
    if !env.iter().any(|(k, _)| *k == "DATABASE_URL") {
        cmd.env_remove("DATABASE_URL");
    }
    cmd.output().await.expect("run reminderctl")
}

/// One due T-3 WhatsApp reminder.
async fn one_due_reminder(db: &TestDb) {
    contact(db, "Budi", "081234567890", "whatsapp").await;
    invoice(db, 1, "INV-1", "2025-11-20").await;
}

/// The `body` that the log channel logged, from JSON log lines.
fn logged_bodies(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "reminderctl::log_channel")
        .map(|v| v["fields"]["body"].as_str().unwrap_or_default().to_string())
        .collect()
}

both!(dotenv_conventions_reach_the_settings, dotenv_conventions_body);
async fn dotenv_conventions_body(db: &TestDb) {
    one_due_reminder(db).await;
    let dotenv = format!(
        "# reminderctl\n\
         export WHATSAPP_PROVIDER=log   # no accounts needed\n\
         \n\
         REMINDER_SENDER_NAME=Tim Wikarta Provider\n\
         DATABASE_URL={} # the test database\n\
         REMINDER_TIMEZONE=\"Asia/Jakarta\" # quoted, with a comment\n\
         REMINDER_DUNNING_BEFORE = '7,3,1'\n\
         LOG_FORMAT=json\n",
        db.url
    );
    let out = run_with_dotenv(db, &dotenv, &["run", "--now", NOW], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    // Every line after the value with spaces was read: the database, the provider, the format.
    assert_eq!(db.int("SELECT count(*) FROM messages WHERE status = 'sent'").await, 1);
    assert!(!db.dir.path().join("reminderctl.db").exists(), "the default database was used");
    let bodies = logged_bodies(&stderr(&out));
    assert_eq!(bodies.len(), 1, "{}", stderr(&out));
    assert!(bodies[0].ends_with("Salam,\nTim Wikarta Provider"), "{}", bodies[0]);
}

both!(the_environment_wins_over_dotenv, environment_wins_body);
async fn environment_wins_body(db: &TestDb) {
    one_due_reminder(db).await;
    let dotenv = format!(
        "DATABASE_URL={}\nWHATSAPP_PROVIDER=log\nREMINDER_SENDER_NAME=From Dotenv\n\
         LOG_FORMAT=json\n",
        db.url
    );
    let env = [("REMINDER_SENDER_NAME", "From Environment")];
    let out = run_with_dotenv(db, &dotenv, &["run", "--now", NOW], &env).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let bodies = logged_bodies(&stderr(&out));
    assert_eq!(bodies.len(), 1, "{}", stderr(&out));
    assert!(bodies[0].ends_with("Salam,\nFrom Environment"), "{}", bodies[0]);
}

#[tokio::test]
async fn a_bad_dotenv_line_stops_every_command_naming_file_line_and_variable() {
    let db = TestDb::sqlite().await;
    let path = db.dir.path().join(".env");
    let cases = [
        (
            "WHATSAPP_PROVIDER=log\n# names\nREMINDER_SENDER_NAME=\"Tim Wikarta Provider\nA=1\n",
            "line 3: REMINDER_SENDER_NAME: the double quote (\") that opens the value is never \
             closed",
        ),
        ("WHATSAPP_PROVIDER=log\nTim Wikarta Provider\n", "line 2: expected KEY=value"),
        (
            "REMINDER_TIMEZONE='Asia/Jakarta' WIB\n",
            "line 1: REMINDER_TIMEZONE: unexpected text after the closing quote",
        ),
    ];
    for (dotenv, problem) in cases {
        for args in [&["run", "--now", NOW][..], &["generate"], &["send"], &["status"], &["seed"]] {
            let out = run_with_dotenv(&db, dotenv, args, &[("DATABASE_URL", &db.url)]).await;
            assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
            assert_eq!(stderr(&out), format!("error: {} {problem}\n", path.display()), "{args:?}");
            assert_eq!(stdout(&out), "", "{args:?}");
        }
    }
    assert_eq!(db.int("SELECT count(*) FROM contacts").await, 0, "seed ran anyway");
}

#[tokio::test]
async fn an_unknown_reminder_setting_is_a_warning_naming_the_closest() {
    let db = TestDb::sqlite().await;
    let out = db.run(&["status"], &[("REMINDER_WHATSAPP_RAET", "2/min")]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "WARN reminderctl: unknown setting REMINDER_WHATSAPP_RAET (the environment) is \
             ignored; did you mean REMINDER_WHATSAPP_RATE?"
        ),
        "{}",
        stderr(&out)
    );
    let dotenv = format!("DATABASE_URL={}\n\nREMINDER_TIMEZOEN=Asia/Makassar\n", db.url);
    let out = run_with_dotenv(&db, &dotenv, &["status"], &[]).await;
    let path = db.dir.path().join(".env");
    assert!(
        stderr(&out).contains(&format!(
            "unknown setting REMINDER_TIMEZOEN ({} line 3) is ignored; did you mean \
             REMINDER_TIMEZONE?",
            path.display()
        )),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn an_empty_database_url_is_an_error_naming_the_flag_or_variable() {
    let db = TestDb::sqlite().await;
    let out = db.run(&["status", "--database-url", ""], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: configuration: --database-url: is empty; give a sqlite: or postgres:// URL\n"
    );
    let out = db.run(&["run"], &[("DATABASE_URL", "")]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: configuration: DATABASE_URL: is empty; give a sqlite: or postgres:// URL\n"
    );
    let out = run_with_dotenv(&db, "DATABASE_URL=\n", &["status"], &[]).await;
    assert!(stderr(&out).contains("DATABASE_URL: is empty"), "{}", stderr(&out));
    assert!(!db.dir.path().join("reminderctl.db").exists(), "the default database was opened");
}

#[tokio::test]
async fn a_database_that_cannot_open_is_named_once_without_its_password() {
    let db = TestDb::sqlite().await;
    let missing = db.dir.path().join("no/such/dir/r.db");
    let url = format!("sqlite:{}", missing.display());
    let out = db.run(&["run"], &[("DATABASE_URL", &url)]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "error: cannot open the sqlite database {}: unable to open database file\n",
            missing.display()
        )
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let url = format!("postgres://app:hunter2-secret@127.0.0.1:{port}/reminders");
    let out = db.run(&["status"], &[("DATABASE_URL", &url)]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "error: cannot open the postgres database reminders on 127.0.0.1:{port}: Connection \
             refused (os error 111)\n"
        )
    );
}

both!(a_template_mistake_stops_the_pass_before_anything_is_written, template_mistake_body);
async fn template_mistake_body(db: &TestDb) {
    one_due_reminder(db).await;
    let env = [("WHATSAPP_PROVIDER", "log")];
    // A reminder queued while the templates were fine must not fail because of the mistake.
    let out = db.run(&["generate", "--now", NOW], &env).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    invoice(db, 1, "INV-2", "2025-11-20").await;

    let dir = db.dir.path().join("templates");
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("dunning_before.txt");
    let dir_s = dir.display().to_string();
    let env = [("WHATSAPP_PROVIDER", "log"), ("REMINDER_TEMPLATE_DIR", dir_s.as_str())];
    let cases = [
        (
            "Halo {{ name }},\n\nTagihan {{ nama_pelanggan }} sebesar {{ amount }}.\n",
            "line 3: undefined variable 'nama_pelanggan' (known: name, invoice_number, amount, \
             amount_value, due_date, stage, days_left, days_overdue, sender_name, service_phone)",
        ),
        ("Halo {{ name | titel }},\n", "line 1: unknown filter 'titel'"),
        ("Halo {{ name }},\n{% if sender_name %}\n", "line 2: syntax error: "),
    ];
    for (text, problem) in cases {
        std::fs::write(&file, text).expect("write");
        for mode in ["run", "generate", "send"] {
            let out = db.run(&[mode, "--now", NOW], &env).await;
            assert_eq!(out.status.code(), Some(1), "{mode}: {}", stderr(&out));
            let expected = format!("error: template {} {problem}", file.display());
            assert!(stderr(&out).starts_with(&expected), "{mode}: {}", stderr(&out));
            assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
        }
    }
    assert_eq!(db.int("SELECT count(*) FROM messages").await, 1, "something was generated");
    assert_eq!(
        db.int("SELECT count(*) FROM messages WHERE status = 'pending' AND attempts = 0").await,
        1,
        "the queued reminder was touched"
    );

    // Checked before the database is opened: the template is the error, not the database.
    let nowhere = format!("sqlite:{}", db.dir.path().join("no/such/dir/r.db").display());
    let env_nowhere = [env[0], env[1], ("DATABASE_URL", nowhere.as_str())];
    let out = db.run(&["run", "--now", NOW], &env_nowhere).await;
    assert!(stderr(&out).starts_with("error: template "), "{}", stderr(&out));

    let missing = db.dir.path().join("tempaltes").display().to_string();
    let env = [("WHATSAPP_PROVIDER", "log"), ("REMINDER_TEMPLATE_DIR", missing.as_str())];
    let out = db.run(&["run", "--now", NOW], &env).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), format!("error: REMINDER_TEMPLATE_DIR: {missing} does not exist\n"));
}

#[tokio::test]
async fn a_file_in_the_template_dir_that_is_no_template_is_a_warning() {
    let db = TestDb::sqlite().await;
    let dir = db.dir.path().join("templates");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("dunning_before.text"), "Halo {{ name }}").expect("write");
    let dir_s = dir.display().to_string();
    let out = db.run(&["status"], &[("REMINDER_TEMPLATE_DIR", dir_s.as_str())]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "{dir_s}: dunning_before.text is not a template name and is ignored (known: \
             dunning_before.txt, dunning_before.subject.txt, dunning_overdue.txt, \
             dunning_overdue.subject.txt, maintenance.txt, maintenance.subject.txt)"
        )),
        "{}",
        stderr(&out)
    );
}

both!(a_channel_without_a_provider_says_which_variable_to_set, no_provider_body);
async fn no_provider_body(db: &TestDb) {
    one_due_reminder(db).await;
    let out = db.run(&["run", "--now", NOW], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let summary = stdout(&out);
    let line = summary.lines().find(|l| l.trim_start().starts_with("whatsapp")).unwrap_or("");
    assert!(line.contains("waiting 1"), "{summary}");
    assert!(line.contains("set WHATSAPP_PROVIDER"), "{summary}");

    let out = db.run(&["status", "--now", NOW], &[]).await;
    let status = stdout(&out);
    let line = status.lines().find(|l| l.trim_start().starts_with("whatsapp")).unwrap_or("");
    assert!(line.contains("not configured: ") && line.contains("WHATSAPP_PROVIDER"), "{status}");
    let out = db.run(&["status", "--json", "--now", NOW], &[]).await;
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let whatsapp = doc["channels"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["channel"] == "whatsapp"))
        .cloned()
        .unwrap_or_default();
    let reason = whatsapp["not_configured"].as_str().unwrap_or_default();
    assert!(reason.contains("WHATSAPP_PROVIDER"), "{doc}");
    assert_eq!(db.int("SELECT count(*) FROM messages WHERE status = 'pending'").await, 1);
}

/// Runs `cmd` with the given stdout, capturing stderr. (`Command::output` would replace the
/// stdout with a pipe of its own.)
async fn with_stdout(mut cmd: tokio::process::Command, stdout: impl Into<Stdio>) -> Output {
    let child = cmd.stdout(stdout).stderr(Stdio::piped()).spawn().expect("spawn");
    child.wait_with_output().await.expect("wait")
}

both!(a_closed_or_full_stdout_is_not_a_panic, closed_stdout_body);
async fn closed_stdout_body(db: &TestDb) {
    one_due_reminder(db).await;
    let env = [("WHATSAPP_PROVIDER", "log")];
    // `reminderctl run | head -0`: the reader is gone before anything is written.
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = with_stdout(db.command(&["run", "--now", NOW], &env), writer).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("cannot write the report"), "a closed pipe is normal");
    // The pass itself was done.
    assert_eq!(db.int("SELECT count(*) FROM messages WHERE status = 'sent'").await, 1);

    // `reminderctl status > /dev/full`: the disk is full.
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").expect("/dev/full");
    let out = with_stdout(db.command(&["status"], &[]), full).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "cannot write the report to stdout: No space left on device (os error 28); the \
             command's work is done, and the exit code is not changed"
        ),
        "{}",
        stderr(&out)
    );
}

both!(control_characters_from_data_are_escaped_in_human_output, control_characters_body);
async fn control_characters_body(db: &TestDb) {
    // A number that is not a phone number fails, and the reason quotes it.
    contact(db, "Budi", "0812\u{1b}]0;pwned\u{7}\u{1b}[2J", "whatsapp").await;
    invoice(db, 1, "INV-1", "2025-11-20").await;
    let env = [("WHATSAPP_PROVIDER", "log")];
    let out = db.run(&["run", "--now", NOW], &env).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let status = db.run(&["status"], &env).await;
    for text in [stdout(&out), stdout(&status)] {
        assert!(text.contains("failed"), "{text}");
        assert!(!text.contains('\u{1b}') && !text.contains('\u{7}'), "{text:?}");
        assert!(text.contains("\\u{1b}]0;pwned\\u{7}"), "{text}");
    }
}

/// Fails on a JSON object with a key twice, at any depth: `serde_json`'s own maps would keep the
/// last one silently.
struct UniqueKeys;

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueKeysVisitor)
    }
}

struct UniqueKeysVisitor;

impl<'de> Visitor<'de> for UniqueKeysVisitor {
    type Value = UniqueKeys;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UniqueKeys, A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(serde::de::Error::custom(format!("duplicate key {key:?}")));
            }
            map.next_value::<UniqueKeys>()?;
        }
        Ok(UniqueKeys)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<UniqueKeys, A::Error> {
        while seq.next_element::<UniqueKeys>()?.is_some() {}
        Ok(UniqueKeys)
    }
    fn visit_bool<E>(self, _: bool) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_i64<E>(self, _: i64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_u64<E>(self, _: u64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_f64<E>(self, _: f64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_str<E>(self, _: &str) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_unit<E>(self) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
}

#[test]
fn the_duplicate_key_check_catches_duplicates() {
    assert!(serde_json::from_str::<UniqueKeys>(r#"{"a":1,"b":{"c":[{"d":1}]}}"#).is_ok());
    assert!(
        serde_json::from_str::<UniqueKeys>(r#"{"fields":{"message":"sent","message":3}}"#).is_err()
    );
    assert!(serde_json::from_str::<UniqueKeys>(r#"[{"a":1,"a":2}]"#).is_err());
}

both!(json_log_lines_have_unique_keys, json_logs_body);
async fn json_logs_body(db: &TestDb) {
    one_due_reminder(db).await;
    contact(db, "Landline", "0211234567", "whatsapp").await;
    invoice(db, 2, "INV-2", "2025-11-20").await;
    let env = [
        ("WHATSAPP_PROVIDER", "log"),
        ("LOG_FORMAT", "json"),
        ("LOG_LEVEL", "debug"),
        ("REMINDER_WHATSAPP_RAET", "1"),
    ];
    let out = db.run(&["run", "--now", NOW], &env).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    // Sent, failed (the landline), and the unknown-setting warning.
    assert!(err.lines().count() >= 3, "{err}");
    for line in err.lines() {
        if let Err(e) = serde_json::from_str::<UniqueKeys>(line) {
            panic!("{e}: {line}");
        }
        let doc: serde_json::Value = serde_json::from_str(line).expect("json");
        assert!(doc["fields"]["message"].is_string(), "the message is not the text: {line}");
    }
}

#[tokio::test]
async fn logs_are_coloured_only_on_a_terminal_and_never_with_no_color() {
    let db = TestDb::sqlite().await;
    // A warning, so that there is a log line to colour; stderr is a pipe here.
    let warn = ("REMINDER_WHATSAPP_RAET", "1");
    let mut cmd = db.command(&["status"], &[warn]);
    cmd.env_remove("NO_COLOR");
    let out = cmd.output().await.expect("run");
    assert!(stderr(&out).contains("REMINDER_WHATSAPP_RAET"), "{}", stderr(&out));
    assert!(!stderr(&out).contains('\u{1b}'), "colour in a pipe: {:?}", stderr(&out));

    // On a terminal (`script` gives the command one), colour unless NO_COLOR is set at all.
    if std::process::Command::new("script").arg("--version").output().is_err() {
        // Written past the test harness's capture so that it shows.
        let _ = writeln!(
            std::io::stderr(),
            "*** `script` is missing: the terminal half of the colour test is SKIPPED ***"
        );
        return;
    }
    let on_terminal = |no_color: Option<&str>| {
        let bin = env!("CARGO_BIN_EXE_reminderctl");
        let mut cmd = tokio::process::Command::new("script");
        cmd.args(["-qec", &format!("'{bin}' status >/dev/null"), "/dev/null"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &db.url)
            .env(warn.0, warn.1)
            .current_dir(db.dir.path());
        if let Some(v) = no_color {
            cmd.env("NO_COLOR", v);
        }
        cmd
    };
    let out = on_terminal(None).output().await.expect("script");
    let terminal = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(terminal.contains("REMINDER_WHATSAPP_RAET"), "{terminal}");
    assert!(terminal.contains("\u{1b}["), "no colour on a terminal: {terminal:?}");
    for value in ["", "1"] {
        let out = on_terminal(Some(value)).output().await.expect("script");
        let terminal = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(terminal.contains("REMINDER_WHATSAPP_RAET"), "{terminal}");
        assert!(!terminal.contains('\u{1b}'), "NO_COLOR={value:?}: {terminal:?}");
    }
}
