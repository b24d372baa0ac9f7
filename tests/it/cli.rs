//! The command line as a user meets it: exit codes, clear errors, and secrets never printed.

use serde_json::json;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::both;
use crate::helpers::{contact, invoice, TestDb};

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[tokio::test]
async fn usage_errors_exit_2() {
    let db = TestDb::sqlite().await;
    for args in [&["frobnicate"][..], &["run", "--now", "yesterday"], &["run", "--bogus"]] {
        let out = db.run(args, &[]).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
    }
}

#[tokio::test]
async fn an_unreachable_database_exits_1_without_printing_its_password() {
    let db = TestDb::sqlite().await;
    let out = db
        .run(&["run"], &[("DATABASE_URL", "postgres://app:hunter2-secret@127.0.0.1:1/app")])
        .await;
    assert_eq!(out.status.code(), Some(1));
    let all = text(&out);
    assert!(all.contains("error: cannot open the postgres database"), "{all}");
    assert!(!all.contains("hunter2-secret"), "{all}");
    assert!(!all.contains("panicked"), "{all}");
}

#[tokio::test]
async fn bad_settings_exit_1_naming_the_variable() {
    let db = TestDb::sqlite().await;
    // (variable, value, the variable the error must name): a half-configured provider names
    // the setting that is missing, not the one that is present.
    for (var, value, named) in [
        ("REMINDER_SEND_WINDOW", "25:00-26:00", "REMINDER_SEND_WINDOW"),
        ("REMINDER_TIMEZONE", "Mars/Olympus", "REMINDER_TIMEZONE"),
        ("REMINDER_WHATSAPP_RATE", "fast", "REMINDER_WHATSAPP_RATE"),
        ("REMINDER_CONCURRENCY", "0", "REMINDER_CONCURRENCY"),
        ("DATABASE_URL", "mysql://localhost/x", "DATABASE_URL"),
        ("TWILIO_ACCOUNT_SID", "AC123", "TWILIO_AUTH_TOKEN"),
        ("WHATSAPP_PROVIDER", "whatsapp-web", "WHATSAPP_PROVIDER"),
        ("LOG_LEVEL", "verbose", "LOG_LEVEL"),
        ("LOG_FORMAT", "jsonl", "LOG_FORMAT"),
    ] {
        let out = db.run(&["run"], &[(var, value)]).await;
        assert_eq!(out.status.code(), Some(1), "{var}={value}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            err.starts_with(&format!("error: configuration: {named}: ")),
            "{var}={value} must name {named}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(out.stdout.is_empty(), "{var}={value}");
    }
}

both!(strict_exits_3_when_a_message_failed, strict_body);
async fn strict_body(db: &TestDb) {
    contact(db, "Landline", "0211234567", "whatsapp").await;
    invoice(db, 1, "INV-1", "2025-11-20").await;
    let env = [("WHATSAPP_PROVIDER", "log")];
    // A dry run fails nothing, whatever it would create: --strict has nothing to report.
    let out =
        db.run(&["run", "--strict", "--dry-run", "--now", "2025-11-17T09:00:00+07:00"], &env).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = db.run(&["run", "--strict", "--now", "2025-11-17T09:00:00+07:00"], &env).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    // Without --strict a failed delivery is data, not a failed pass.
    let out = db.run(&["run", "--now", "2025-11-17T09:00:00+07:00"], &env).await;
    assert_eq!(out.status.code(), Some(0));
}

both!(secrets_never_reach_output_even_at_debug_level, secrets_body);
async fn secrets_body(db: &TestDb) {
    contact(db, "Tele", "081234567890", "telegram").await;
    contact(db, "Wa", "081234567891", "whatsapp").await;
    invoice(db, 1, "INV-1", "2025-11-20").await;
    invoice(db, 2, "INV-2", "2025-11-20").await;
    // Telegram's token is in the URL path; point it at a port where nothing listens.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(json!({"code": 20003, "message": "Authenticate"})),
        )
        .mount(&twilio)
        .await;
    let telegram_token = "987654:TELEGRAM-SECRET-abc";
    let twilio_token = "TWILIO-SECRET-xyz";
    let telegram_base = format!("http://127.0.0.1:{port}");
    let env = [
        ("TELEGRAM_BOT_TOKEN", telegram_token),
        ("TELEGRAM_API_BASE", telegram_base.as_str()),
        ("TWILIO_ACCOUNT_SID", "AC0123456789abcdef0123456789abcdef"),
        ("TWILIO_AUTH_TOKEN", twilio_token),
        ("TWILIO_WHATSAPP_FROM", "+14155238886"),
        ("TWILIO_API_BASE", &twilio.uri()),
        ("LOG_LEVEL", "debug"),
    ];
    for args in [
        &["run", "--now", "2025-11-17T09:00:00+07:00"][..],
        &["run", "--json", "--now", "2025-11-17T09:05:00+07:00"],
        &["status", "--json"],
        &["status"],
    ] {
        let out = db.run(args, &env).await;
        let all = text(&out);
        assert_eq!(out.status.code(), Some(0), "{all}");
        for secret in [telegram_token, "TELEGRAM-SECRET", twilio_token] {
            assert!(!all.contains(secret), "{args:?} printed a secret:\n{all}");
        }
    }
    // Both failures are visible, with their reasons, and nothing was lost.
    assert_eq!(db.int("SELECT count(*) FROM messages WHERE status = 'pending'").await, 2);
    let error = db.text("SELECT last_error FROM messages WHERE channel = 'telegram'").await;
    assert!(error.unwrap_or_default().contains("connect"));
}

both!(a_broken_template_fails_the_pass_before_anything_is_written, broken_template_body);
async fn broken_template_body(db: &TestDb) {
    contact(db, "Budi", "081234567890", "whatsapp").await;
    invoice(db, 1, "INV-1", "2025-11-20").await;
    let dir = db.dir.path().join("templates");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("dunning_before.txt"), "Halo {% if %}").expect("write");
    let dir = dir.display().to_string();
    let env = [("WHATSAPP_PROVIDER", "log"), ("REMINDER_TEMPLATE_DIR", dir.as_str())];
    let out = db.run(&["run", "--now", "2025-11-17T09:00:00+07:00"], &env).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("dunning_before.txt"), "the error names the file: {}", text(&out));
    assert_eq!(db.int("SELECT count(*) FROM messages").await, 0);
}

both!(a_failure_in_status_carries_the_time_of_its_attempt, failure_time_body);
async fn failure_time_body(db: &TestDb) {
    contact(db, "Landline", "0211234567", "whatsapp").await;
    invoice(db, 1, "INV-1", "2025-11-20").await;
    let env = [("WHATSAPP_PROVIDER", "log")];
    db.pass(&["generate", "--now", "2025-11-17T09:00:00+07:00"], &env).await;
    // Sent (and failed) an hour after it was generated: status shows the hour of the attempt.
    db.pass(&["send", "--now", "2025-11-17T10:00:00+07:00"], &env).await;
    let status = db.pass(&["status", "--now", "2025-11-17T10:05:00+07:00"], &env).await;
    let at = status["failures"][0]["at"].as_str().unwrap_or_default().to_string();
    assert!(at.starts_with("2025-11-17T03:00"), "the attempt's time, not the lease's: {status}");
}
