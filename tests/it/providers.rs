//! Every WhatsApp gateway of the seeds carries every family of reminder, and its channel-wide
//! failures pause the channel without spending attempts: the real binary against each
//! provider's documented contract on wiremock.

use serde_json::{json, Value};
use wiremock::matchers::{body_string_contains, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::both;
use crate::helpers::{contact, count, details, invoice, TestDb};

struct Gateway {
    name: &'static str,
    /// Settings pointing the provider at `base`, with no rate limit.
    env: fn(&str) -> Vec<(&'static str, String)>,
}

fn waha_env(base: &str) -> Vec<(&'static str, String)> {
    vec![
        ("WAHA_BASE_URL", base.into()),
        ("WAHA_API_KEY", "waha-key-secret".into()),
        ("WAHA_SESSION", "default".into()),
    ]
}
fn fonnte_env(base: &str) -> Vec<(&'static str, String)> {
    vec![("FONNTE_TOKEN", "fonnte-token-secret".into()), ("FONNTE_API_BASE", base.into())]
}
fn starsender_env(base: &str) -> Vec<(&'static str, String)> {
    vec![
        ("STARSENDER_API_KEY", "starsender-key-secret".into()),
        ("STARSENDER_API_BASE", base.into()),
    ]
}
fn twilio_env(base: &str) -> Vec<(&'static str, String)> {
    crate::helpers::twilio_env(base)
}

const GATEWAYS: [Gateway; 4] = [
    Gateway { name: "twilio", env: twilio_env },
    Gateway { name: "waha", env: waha_env },
    Gateway { name: "fonnte", env: fonnte_env },
    Gateway { name: "starsender", env: starsender_env },
];

/// A mock that accepts everything the way `gateway` documents success, checking its auth and
/// that numbers arrive normalized.
async fn accepting(gateway: &str) -> MockServer {
    let server = MockServer::start().await;
    match gateway {
        "twilio" => {
            Mock::given(method("POST"))
                .and(body_string_contains("To=whatsapp%3A%2B628"))
                .respond_with(ResponseTemplate::new(201).set_body_json(json!({"sid": "SM1"})))
                .mount(&server)
                .await;
        }
        "waha" => {
            Mock::given(method("GET"))
                .and(path("/api/contacts/check-exists"))
                .and(header("X-Api-Key", "waha-key-secret"))
                .respond_with(
                    ResponseTemplate::new(200).set_body_json(json!({"numberExists": true})),
                )
                .mount(&server)
                .await;
            Mock::given(method("POST"))
                .and(path("/api/sendText"))
                .and(header("X-Api-Key", "waha-key-secret"))
                .and(body_string_contains("@c.us"))
                .and(body_string_contains("\"session\":\"default\""))
                .respond_with(
                    ResponseTemplate::new(201).set_body_json(
                        json!({"id": {"_serialized": "true_6281234567801@c.us_3EB0"}}),
                    ),
                )
                .mount(&server)
                .await;
        }
        "fonnte" => {
            Mock::given(method("POST"))
                .and(path("/send"))
                .and(header("Authorization", "fonnte-token-secret"))
                .and(body_string_contains("target=628"))
                .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                    "detail": "success! message in queue", "id": ["80367170"],
                    "process": "pending", "status": true, "target": ["6281234567801"]
                })))
                .mount(&server)
                .await;
        }
        _ => {
            Mock::given(method("POST"))
                .and(path("/api/send"))
                .and(header("Authorization", "starsender-key-secret"))
                .and(body_string_contains("\"to\":\"628"))
                .respond_with(ResponseTemplate::new(200).set_body_json(
                    json!({"success": true, "message": "Message sent", "data": {"id": "ss-1"}}),
                ))
                .mount(&server)
                .await;
        }
    }
    server
}

fn env_for(gateway: &Gateway, base: &str) -> Vec<(&'static str, String)> {
    let mut env = (gateway.env)(base);
    env.push(("REMINDER_WHATSAPP_RATE", "unlimited".into()));
    env.push(("TELEGRAM_PROVIDER", "log".into()));
    env.push(("MAIL_MAILER", "log".into()));
    env
}

both!(every_gateway_carries_every_family_of_reminder, every_gateway_body);
async fn every_gateway_body(db: &TestDb) {
    let now = "2025-11-18T09:00:00+07:00";
    db.pass(&["seed", "--now", now], &[]).await;
    for gateway in &GATEWAYS {
        // Each gateway gets the same work: re-seed and clear the outbox between them.
        db.exec(
            "DELETE FROM delivery_attempts; DELETE FROM messages; \
                 UPDATE scheduled_messages SET next_run_at = NULL, status = 'active'",
        )
        .await;
        let server = accepting(gateway.name).await;
        let env = env_for(gateway, &server.uri());
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let doc = db.pass(&["run", "--now", now], &env).await;
        let whatsapp: Vec<Value> = details(&doc)
            .into_iter()
            .filter(|d| d["channel"] == "whatsapp" && d["status"] != "pending")
            .collect();
        for kind in ["dunning", "maintenance", "scheduled"] {
            assert!(
                whatsapp.iter().any(|d| d["kind"] == kind && d["status"] == "sent"),
                "{}: no {kind} reminder went out: {doc}",
                gateway.name
            );
        }
        assert!(whatsapp.iter().all(|d| d["status"] == "sent"), "{}: {doc}", gateway.name);
        assert!(whatsapp.iter().all(|d| d["provider"] == gateway.name));
        let sends = server
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.method.as_str() == "POST")
            .count();
        assert_eq!(sends, whatsapp.len(), "{}: one request per message", gateway.name);
        let missing_ids = db
            .int("SELECT count(*) FROM messages WHERE channel = 'whatsapp' AND provider_message_id IS NULL")
            .await;
        assert_eq!(missing_ids, 0, "{}: every provider id is kept", gateway.name);
    }
}

/// A reply that takes the whole channel down, per gateway.
fn channel_down_replies() -> Vec<(&'static str, ResponseTemplate, &'static str)> {
    vec![
        (
            "waha",
            ResponseTemplate::new(422).set_body_json(json!({
                "error": "Session status is not as expected. Try again later or restart the session",
                "session": "default", "status": "SCAN_QR_CODE", "expected": ["WORKING"]
            })),
            "SCAN_QR_CODE",
        ),
        (
            "fonnte",
            ResponseTemplate::new(200)
                .set_body_json(json!({"status": false, "reason": "request invalid on disconnected device"})),
            "disconnected",
        ),
        (
            "fonnte",
            ResponseTemplate::new(200).set_body_json(json!({"status": false, "reason": "insufficient quota"})),
            "quota",
        ),
        (
            "fonnte",
            ResponseTemplate::new(200).set_body_json(json!({"status": false, "reason": "token invalid"})),
            "token",
        ),
        ("starsender", ResponseTemplate::new(401).set_body_json(json!({"success": false, "message": "Unauthorized"})), "401"),
    ]
}

both!(a_channel_wide_failure_pauses_the_channel_and_spends_no_attempt, channel_down_body);
async fn channel_down_body(db: &TestDb) {
    contact(db, "Budi", "081234567890", "whatsapp").await;
    for n in 1..=3 {
        invoice(db, 1, &format!("INV-{n}"), "2025-11-20").await;
    }
    db.pass(&["generate", "--now", "2025-11-17T09:00:00+07:00"], &[]).await;
    for (minute, (name, reply, reason)) in channel_down_replies().into_iter().enumerate() {
        // Released messages are due again from the moment they were given back.
        let now = format!("2025-11-17T09:{:02}:00+07:00", minute + 1);
        let gateway = GATEWAYS.iter().find(|g| g.name == name).expect("gateway");
        let server = MockServer::start().await;
        Mock::given(wiremock::matchers::any()).respond_with(reply).mount(&server).await;
        let mut env = env_for(gateway, &server.uri());
        env.push(("REMINDER_CONCURRENCY", "1".into()));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let doc = db.pass(&["send", "--now", &now], &env).await;
        assert_eq!((count(&doc, "sent"), count(&doc, "failed")), (0, 0), "{name}: {doc}");
        assert_eq!(
            server.received_requests().await.unwrap_or_default().len(),
            1,
            "{name} stops: {doc}"
        );
        assert_eq!(db.int("SELECT count(*) FROM messages WHERE status = 'pending'").await, 3);
        assert_eq!(db.int("SELECT sum(attempts) FROM messages").await, 0, "{name}");
        let status = db.pass(&["status"], &env).await;
        let down = status["channels"][0]["down"]["reason"].as_str().unwrap_or_default().to_string();
        assert!(down.to_lowercase().contains(&reason.to_lowercase()), "{name}: {down}");
        assert!(doc["channels"][0]["note"].as_str().unwrap_or_default().contains("channel down"));
    }
}

fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

both!(no_provider_secret_is_ever_printed, no_secret_body);
async fn no_secret_body(db: &TestDb) {
    db.exec(
        "INSERT INTO contacts (name, phone, email, channels) \
         VALUES ('Budi', '081234567890', 'budi@example.com', 'whatsapp,email')",
    )
    .await;
    invoice(db, 1, "INV-1", "2025-11-20").await;
    // In the order of GATEWAYS, then the mail password.
    let secrets = [
        "twilio-secret-token-5f3a",
        "waha-key-secret",
        "fonnte-token-secret",
        "starsender-key-secret",
        "smtp-password-secret",
    ];
    let closed = format!("http://127.0.0.1:{}", closed_port());
    let smtp_port = closed_port().to_string();
    for (minute, gateway) in GATEWAYS.iter().enumerate() {
        let own = secrets[minute];
        let rejecting = MockServer::start().await;
        Mock::given(wiremock::matchers::any())
            // A proxy that echoes what it was sent must not get the key printed either.
            .respond_with(
                ResponseTemplate::new(401).set_body_string(format!("Unauthorized: {own}")),
            )
            .mount(&rejecting)
            .await;
        for (second, base) in [closed.as_str(), rejecting.uri().as_str()].into_iter().enumerate() {
            let mut env = env_for(gateway, base);
            env.retain(|(k, _)| *k != "MAIL_MAILER");
            env.extend([
                ("LOG_LEVEL", "debug".to_string()),
                ("MAIL_HOST", "127.0.0.1".to_string()),
                ("MAIL_PORT", smtp_port.clone()),
                ("MAIL_ENCRYPTION", "none".to_string()),
                ("MAIL_USERNAME", "reminders".to_string()),
                ("MAIL_PASSWORD", "smtp-password-secret".to_string()),
                ("MAIL_FROM_ADDRESS", "noreply@example.com".to_string()),
            ]);
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let now = format!("2025-11-17T09:{minute:02}:{:02}+07:00", second * 30);
            for args in
                [&["run", "--json", "--now", &now][..], &["run", "--now", &now], &["status"]]
            {
                let out = db.run(args, &env).await;
                let all = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                assert_eq!(out.status.code(), Some(0), "{}: {all}", gateway.name);
                for secret in secrets {
                    assert!(
                        !all.contains(secret),
                        "{} {args:?} printed {secret}:\n{all}",
                        gateway.name
                    );
                }
            }
        }
    }
    // Nothing was lost on the way: the reminder is still there, waiting for a working channel.
    assert_eq!(db.text("SELECT status FROM messages").await.as_deref(), Some("pending"));
}

fn smtp_env(port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("MAIL_HOST", "127.0.0.1".into()),
        ("MAIL_PORT", port.to_string()),
        ("MAIL_ENCRYPTION", "none".into()),
        ("MAIL_FROM_ADDRESS", "noreply@wikarta.example".into()),
        ("MAIL_FROM_NAME", "Wikarta Provider".into()),
        ("REMINDER_SENDER_NAME", "Tim Wikarta Provider".into()),
        ("REMINDER_EMAIL_RATE", "unlimited".into()),
    ]
}

both!(email_reminders_arrive_over_smtp_with_seed_003s_subject, smtp_body);
async fn smtp_body(db: &TestDb) {
    let Some(sink) = crate::smtp::SmtpSink::start().await else { return };
    db.exec(
        "INSERT INTO contacts (name, email, channels) VALUES \
             ('Dimas Pratama', 'dimas@example.com', 'email'), \
             ('Gone', 'reject-me@example.com', 'email'), \
             ('Later', 'defer-me@example.com', 'email')",
    )
    .await;
    invoice(db, 1, "INV-20251115-123456", "2025-11-18").await;
    invoice(db, 2, "INV-20251115-000002", "2025-11-18").await;
    invoice(db, 3, "INV-20251115-000003", "2025-11-18").await;
    let env = smtp_env(sink.port);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let doc = db.pass(&["run", "--now", "2025-11-15T09:00:00+07:00"], &env).await;
    assert_eq!(
        (count(&doc, "sent"), count(&doc, "failed"), count(&doc, "retried")),
        (1, 1, 1),
        "{doc}"
    );

    let mails = sink.messages();
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert!(mail.contains("To: dimas@example.com"), "{mail}");
    assert!(mail.contains("Wikarta Provider"), "{mail}");
    // The subject carries 🕒, so it is encoded; the raw text proves the invoice number is in it.
    let subject = db.text("SELECT subject FROM messages WHERE contact_id = 1").await;
    assert_eq!(subject.as_deref(), Some("Pengingat Pembayaran Tagihan INV-20251115-123456 🕒"));
    let rejected = db.text("SELECT last_error FROM messages WHERE contact_id = 2").await;
    assert!(rejected.unwrap_or_default().contains("550"), "a 5xx reply is permanent");
    let deferred = db.text("SELECT status FROM messages WHERE contact_id = 3").await;
    assert_eq!(deferred.as_deref(), Some("pending"), "a 4xx reply is retried");
    assert_eq!(
        db.text("SELECT provider FROM messages WHERE contact_id = 1").await.as_deref(),
        Some("smtp")
    );
}
