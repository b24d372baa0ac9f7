//! Channel preference and fallback: a permanent failure on one channel sends the reminder on the
//! contact's next channel, with dedup still holding per channel.

use serde_json::{json, Value};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::both;
use crate::helpers::{count, details, invoice, pairs, twilio_env, TestDb, LOG_CHANNELS};

async fn run_at(db: &TestDb, now: &str, env: &[(&str, &str)]) -> Value {
    db.pass(&["run", "--now", now], env).await
}

both!(an_unusable_number_falls_back_to_the_next_channel, unusable_number_body);
async fn unusable_number_body(db: &TestDb) {
    db.exec(
        "INSERT INTO contacts (name, phone, telegram_chat_id, channels) \
         VALUES ('Budi', '0211234567', '42', 'whatsapp, telegram')",
    )
    .await;
    invoice(db, 1, "INV-1", "2025-11-20").await;
    let doc = run_at(db, "2025-11-17T09:00:00+07:00", &LOG_CHANNELS).await;
    // The last detail of the row is its delivery (the first is its generation).
    let whatsapp =
        details(&doc).into_iter().rev().find(|d| d["channel"] == "whatsapp").unwrap_or_default();
    assert_eq!(whatsapp["status"], "failed", "{doc}");
    assert!(whatsapp["error"].as_str().unwrap_or_default().ends_with("; falling back to telegram"));
    assert_eq!(doc["channels"][0]["fallback"], 1, "{doc}");

    // The fallback goes out on Telegram, once: in this pass if the Telegram lane is still
    // claiming, else in the next.
    let next = run_at(db, "2025-11-17T09:01:00+07:00", &LOG_CHANNELS).await;
    assert_eq!(count(&doc, "sent") + count(&next, "sent"), 1, "{doc}\n{next}");
    let telegram = db.text("SELECT status FROM messages WHERE channel = 'telegram'").await;
    assert_eq!(telegram.as_deref(), Some("sent"));
    let doc = run_at(db, "2025-11-17T09:02:00+07:00", &LOG_CHANNELS).await;
    assert_eq!((count(&doc, "generated"), count(&doc, "sent")), (0, 0));
    assert_eq!(db.int("SELECT count(*) FROM messages").await, 2);
    assert_eq!(
        db.int("SELECT count(DISTINCT dedup_key) FROM messages").await,
        1,
        "one reminder, two channels"
    );
}

both!(a_permanent_provider_error_falls_back_to_email, provider_error_body);
async fn provider_error_body(db: &TestDb) {
    db.exec(
        "INSERT INTO contacts (name, phone, email, channels) \
         VALUES ('Budi', '081234567890', 'budi@example.com', 'whatsapp,email')",
    )
    .await;
    invoice(db, 1, "INV-1", "2025-11-20").await;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(
            json!({"code": 21211, "message": "The 'To' number is not a valid phone number.", "status": 400}),
        ))
        .mount(&server)
        .await;
    let mut env = twilio_env(&server.uri());
    env.push(("MAIL_MAILER", "log".into()));
    let env = pairs(&env);
    let first = run_at(db, "2025-11-17T09:00:00+07:00", &env).await;
    let second = run_at(db, "2025-11-17T09:01:00+07:00", &env).await;
    assert_eq!(count(&first, "sent") + count(&second, "sent"), 1, "{first}\n{second}");
    let email = db.text("SELECT status FROM messages WHERE channel = 'email'").await;
    assert_eq!(email.as_deref(), Some("sent"));
    let subject = db.text("SELECT subject FROM messages WHERE channel = 'email'").await;
    assert_eq!(subject.as_deref(), Some("Pengingat Pembayaran Tagihan INV-1 🕒"));
    let error = db.text("SELECT last_error FROM messages WHERE channel = 'whatsapp'").await;
    assert!(error.unwrap_or_default().contains("21211"));
}

both!(a_contact_with_no_usable_address_is_skipped_with_the_reason, no_address_body);
async fn no_address_body(db: &TestDb) {
    db.exec("INSERT INTO contacts (name, channels) VALUES ('Nobody', 'whatsapp,email')").await;
    invoice(db, 1, "INV-1", "2025-11-20").await;
    // The email lane may take the fallback row in the same pass or in the next one.
    let first = run_at(db, "2025-11-17T09:00:00+07:00", &LOG_CHANNELS).await;
    let second = run_at(db, "2025-11-17T09:01:00+07:00", &LOG_CHANNELS).await;
    assert_eq!(count(&first, "skipped") + count(&second, "skipped"), 2, "{first}\n{second}");
    let reasons = [
        db.text("SELECT last_error FROM messages WHERE channel = 'whatsapp'").await,
        db.text("SELECT last_error FROM messages WHERE channel = 'email'").await,
    ];
    assert_eq!(
        reasons,
        [
            Some("contact has no phone number; falling back to email".to_string()),
            Some("contact has no email address".to_string())
        ]
    );
    assert_eq!(db.int("SELECT count(*) FROM messages WHERE status = 'skipped'").await, 2);
}

both!(changing_the_preferred_channel_does_not_send_a_reminder_again, preference_change_body);
async fn preference_change_body(db: &TestDb) {
    db.exec(
        "INSERT INTO contacts (name, phone, email, channels) \
         VALUES ('Budi', '081234567890', 'budi@example.com', 'whatsapp')",
    )
    .await;
    invoice(db, 1, "INV-1", "2025-11-20").await;
    assert_eq!(count(&run_at(db, "2025-11-17T09:00:00+07:00", &LOG_CHANNELS).await, "sent"), 1);
    db.exec("UPDATE contacts SET channels = 'email,whatsapp'").await;
    let doc = run_at(db, "2025-11-17T10:00:00+07:00", &LOG_CHANNELS).await;
    assert_eq!(count(&doc, "generated"), 0, "T-3 was already sent on WhatsApp: {doc}");
    // The next stage follows the new preference.
    let doc = run_at(db, "2025-11-19T09:00:00+07:00", &LOG_CHANNELS).await;
    assert_eq!(details(&doc).last().map(|d| d["channel"].clone()), Some(json!("email")));
}
