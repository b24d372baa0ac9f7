//! What an operator meets: `.env` read like the tools they know, one clear error for each
//! mistake before anything is generated or sent, warnings for names that are probably typos, and
//! output that reads well in cron mail (no colour, no raw control characters, no panics on a
//! closed stdout, JSON log lines with unique keys).

use std::process::{Output, Stdio};

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
    db.cleanup().await;
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
    db.cleanup().await;
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
    db.cleanup().await;
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
    db.cleanup().await;
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
