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
