//! The commands a person runs by hand to check a channel: they ask first, refuse without a
//! terminal, and record what they sent.

use serde_json::json;
use wiremock::matchers::{body_string_contains, method};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::both;
use crate::helpers::{pairs, twilio_env, TestDb};

async fn twilio_ok() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"sid": "SM42"})))
        .mount(&server)
        .await;
    server
}

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

both!(test_whatsapp_refuses_without_a_terminal_or_yes, refuses_body);
async fn refuses_body(db: &TestDb) {
    let server = twilio_ok().await;
    let env = twilio_env(&server.uri());
    for args in [
        &["test-whatsapp", "085707211646", "Halo, test WhatsApp!"][..],
        &["test-dunning", "customer@example.com", "085707211646"],
    ] {
        let out = db
            .command(args, &pairs(&env))
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .expect("ran");
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(text(&out).contains("refusing to send without confirmation"), "{}", text(&out));
    }
    assert!(server.received_requests().await.unwrap_or_default().is_empty());
    assert_eq!(db.int("SELECT count(*) FROM messages").await, 0);
    assert_eq!(db.int("SELECT count(*) FROM invoices").await, 0);
}

both!(test_whatsapp_with_yes_sends_one_message_now, sends_body);
async fn sends_body(db: &TestDb) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(body_string_contains("To=whatsapp%3A%2B6285707211646"))
        .and(body_string_contains("Body=Halo%2C+test+WhatsApp%21"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"sid": "SM42"})))
        .expect(1)
        .mount(&server)
        .await;
    let mut env = twilio_env(&server.uri());
    // A person asked for it: the send window does not hold it back.
    env.push(("REMINDER_SEND_WINDOW", "08:00-08:01".into()));
    let out = db
        .run(&["test-whatsapp", "--yes", "085707211646", "Halo, test WhatsApp!"], &pairs(&env))
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("✅ WhatsApp sent via twilio"), "{}", text(&out));
    assert_eq!(db.text("SELECT kind FROM messages").await.as_deref(), Some("test"));
    assert_eq!(db.text("SELECT provider_message_id FROM messages").await.as_deref(), Some("SM42"));

    let out = db.run(&["test-whatsapp", "--yes", "0211234567", "Halo"], &pairs(&env)).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("not a mobile number") || text(&out).contains("0211234567"));
}

both!(test_dunning_reuses_its_customer_and_sends_on_email_and_whatsapp, dunning_body);
async fn dunning_body(db: &TestDb) {
    let server = twilio_ok().await;
    let mut env = twilio_env(&server.uri());
    env.push(("MAIL_MAILER", "log".into()));
    let env = pairs(&env);
    let args = [
        "test-dunning",
        "--yes",
        "--now",
        "2025-11-15T10:00:00+07:00",
        "dimas@example.com",
        "085707211646",
    ];
    let out = db.run(&args, &env).await;
    let first = text(&out);
    assert_eq!(out.status.code(), Some(0), "{first}");
    for step in [
        "🔧 Creating test customer",
        "✅ Customer created: Pelanggan Uji",
        "✅ Invoice created: INV-20251115-",
        "(T-3)",
        "✅ email to dimas@example.com: sent",
        "✅ whatsapp to 6285707211646: sent",
    ] {
        assert!(first.contains(step), "missing {step:?} in:\n{first}");
    }
    let out = db.run(&args, &env).await;
    let second = text(&out);
    assert_eq!(out.status.code(), Some(0), "{second}");
    assert!(second.contains("✅ Using existing customer: Pelanggan Uji (ID: 1)"), "{second}");
    assert_eq!(db.int("SELECT count(*) FROM contacts").await, 1);
    assert_eq!(db.int("SELECT count(*) FROM invoices").await, 2);
    assert_eq!(db.int("SELECT count(*) FROM messages WHERE status = 'sent'").await, 4);
    assert_eq!(server.received_requests().await.unwrap_or_default().len(), 2);
    // The regular pass knows these reminders were sent.
    let doc = db.pass(&["run", "--now", "2025-11-15T10:05:00+07:00"], &env).await;
    assert_eq!(doc["generated"], 0, "{doc}");
}

both!(test_dunning_never_touches_a_real_customer_with_the_same_email, real_customer_body);
async fn real_customer_body(db: &TestDb) {
    db.exec(
        "INSERT INTO contacts (name, phone, email, channels, opted_out_at) VALUES \
         ('Dimas Asli', '081111111111', 'dimas@example.com', 'telegram', \
          '2025-11-01T00:00:00+07:00')",
    )
    .await;
    let server = twilio_ok().await;
    let mut env = twilio_env(&server.uri());
    env.push(("MAIL_MAILER", "log".into()));
    let env = pairs(&env);
    let now = "2025-11-15T10:00:00+07:00";
    let args = ["test-dunning", "--yes", "--now", now, "dimas@example.com", "085707211646"];
    let out = db.run(&args, &env).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("✅ Customer created: Pelanggan Uji"), "{}", text(&out));
    // The customer is exactly as the app left them.
    let real = "SELECT phone || '|' || channels || '|' || CAST(opted_out_at IS NOT NULL AS TEXT) \
                FROM contacts WHERE name = 'Dimas Asli'";
    let expected =
        if db.is_postgres() { "081111111111|telegram|true" } else { "081111111111|telegram|1" };
    assert_eq!(db.text(real).await.as_deref(), Some(expected));
    assert_eq!(db.int("SELECT count(*) FROM contacts").await, 2);
    // The test invoice is never reminded by the rules, whatever day cron runs.
    for day in
        ["2025-11-15T10:05:00+07:00", "2025-11-17T09:00:00+07:00", "2025-11-21T09:00:00+07:00"]
    {
        let doc = db.pass(&["run", "--now", day], &env).await;
        assert_eq!(doc["generated"], 0, "{day}: {doc}");
    }
    assert_eq!(server.received_requests().await.unwrap_or_default().len(), 1);
}

both!(a_test_message_that_was_not_sent_is_failed_not_left_for_cron, unsent_body);
async fn unsent_body(db: &TestDb) {
    let server = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(503)).mount(&server).await;
    let env = twilio_env(&server.uri());
    let out = db
        .run(&["test-whatsapp", "--yes", "085707211646", "Halo, test WhatsApp!"], &pairs(&env))
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("❌ WhatsApp not sent: failed"), "{}", text(&out));
    assert_eq!(db.text("SELECT status FROM messages").await.as_deref(), Some("failed"));
    let error = db.text("SELECT last_error FROM messages").await.unwrap_or_default();
    assert!(error.contains("not sent") && error.contains("503"), "{error}");
    // Cron, an hour later, does not send it without asking anyone.
    let ok = twilio_ok().await;
    let doc = db
        .pass(&["run", "--now", "2099-01-01T09:00:00+07:00"], &pairs(&twilio_env(&ok.uri())))
        .await;
    assert_eq!(doc["sent"], 0, "{doc}");
    assert!(ok.received_requests().await.unwrap_or_default().is_empty());
}

#[tokio::test]
async fn the_prompt_works_when_only_stdin_is_a_terminal() {
    use tokio::io::AsyncWriteExt as _;
    if std::process::Command::new("script").arg("--version").output().is_err() {
        assert!(!crate::helpers::under_ci(), "`script` (util-linux) is missing under CI");
        return;
    }
    let db = TestDb::sqlite().await;
    let server = twilio_ok().await;
    // `script` gives the command a terminal; its stdout and stderr go to files, as under a
    // wrapper that logs them.
    let bin = env!("CARGO_BIN_EXE_reminderctl");
    let mut cmd = tokio::process::Command::new("script");
    cmd.args([
        "-qec",
        &format!("'{bin}' test-whatsapp 085707211646 'Halo' >out.txt 2>err.txt"),
        "/dev/null",
    ])
    .env_clear()
    .env("PATH", std::env::var("PATH").unwrap_or_default())
    .env("DATABASE_URL", &db.url)
    .current_dir(db.dir.path())
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::piped())
    .kill_on_drop(true);
    for (k, v) in twilio_env(&server.uri()) {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("script");
    let mut stdin = child.stdin.take().expect("stdin");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    stdin.write_all(b"y").await.expect("answer");
    stdin.flush().await.expect("flush");
    let out = tokio::time::timeout(std::time::Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("the command finished")
        .expect("script");
    let terminal = String::from_utf8_lossy(&out.stdout).into_owned();
    let stdout = std::fs::read_to_string(db.dir.path().join("out.txt")).unwrap_or_default();
    assert!(
        terminal.contains("Send this WhatsApp message now?"),
        "asked on the terminal: {terminal}"
    );
    assert!(stdout.contains("✅ WhatsApp sent via twilio"), "{stdout}\n{terminal}");
    assert_eq!(server.received_requests().await.unwrap_or_default().len(), 1);
}
