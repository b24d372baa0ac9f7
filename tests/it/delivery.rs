//! Delivery through a provider on wiremock: outcomes, retries, rate limits, channel-wide
//! failures, leases, overlapping passes and crashes.

use std::time::Duration;

use serde_json::{json, Value};
use wiremock::matchers::{body_string_contains, header_exists, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::both;
use crate::helpers::{contact, count, details, invoice, pairs, twilio_env, TestDb, LOG_CHANNELS};

const TWILIO_PATH: &str = "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json";

async fn twilio(template: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST")).and(path(TWILIO_PATH)).respond_with(template).mount(&server).await;
    server
}

fn created() -> ResponseTemplate {
    ResponseTemplate::new(201).set_body_json(json!({"sid": "SM0001", "status": "queued"}))
}

async fn run(db: &TestDb, server: &MockServer, now: &str, extra: &[(&'static str, &str)]) -> Value {
    let mut env = twilio_env(&server.uri());
    env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_string())));
    db.pass(&["run", "--now", now], &pairs(&env)).await
}

async fn one_due_invoice(db: &TestDb) {
    contact(db, "Budi", "0812-3456-7890", "whatsapp").await;
    invoice(db, 1, "INV-1", "2025-11-20").await;
}

/// One WhatsApp contact with `n` invoices due on 20 November (INV-1 … INV-n).
async fn due_invoices(db: &TestDb, n: usize) {
    contact(db, "Budi", "081234567890", "whatsapp").await;
    for i in 1..=n {
        invoice(db, 1, &format!("INV-{i}"), "2025-11-20").await;
    }
}

both!(twilio_gets_the_normalized_number_and_the_sid_is_kept, twilio_request_body);
async fn twilio_request_body(db: &TestDb) {
    one_due_invoice(db).await;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(TWILIO_PATH))
        .and(header_exists("authorization"))
        .and(body_string_contains("To=whatsapp%3A%2B6281234567890"))
        .and(body_string_contains("From=whatsapp%3A%2B14155238886"))
        .respond_with(created())
        .expect(1)
        .mount(&server)
        .await;
    let doc = run(db, &server, "2025-11-17T09:00:00+07:00", &[]).await;
    assert_eq!(count(&doc, "sent"), 1, "{doc}");
    let row = db.text("SELECT provider_message_id FROM messages").await;
    assert_eq!(row.as_deref(), Some("SM0001"));
    assert_eq!(db.text("SELECT provider FROM messages").await.as_deref(), Some("twilio"));
    assert_eq!(db.int("SELECT count(*) FROM delivery_attempts WHERE outcome = 'sent'").await, 1);
}

both!(transient_errors_back_off_then_fail_after_max_attempts, transient_body);
async fn transient_body(db: &TestDb) {
    one_due_invoice(db).await;
    let server = twilio(ResponseTemplate::new(503)).await;
    let doc = run(db, &server, "2025-11-17T09:00:00+07:00", &[]).await;
    assert_eq!((count(&doc, "retried"), count(&doc, "failed")), (1, 0));
    assert_eq!(db.int("SELECT attempts FROM messages").await, 1);
    // Not due again 30 s later: the first backoff is at least a minute.
    let doc = run(db, &server, "2025-11-17T09:00:30+07:00", &[]).await;
    assert_eq!(count(&doc, "retried"), 0);
    let doc = run(db, &server, "2025-11-17T09:05:00+07:00", &[]).await;
    assert_eq!(count(&doc, "retried"), 1);
    let doc = run(db, &server, "2025-11-17T09:30:00+07:00", &[]).await;
    assert_eq!(count(&doc, "failed"), 1, "{doc}");
    let error = db.text("SELECT last_error FROM messages").await.unwrap_or_default();
    assert!(error.starts_with("gave up after 3 attempts"), "{error}");
    assert_eq!(server.received_requests().await.unwrap_or_default().len(), 3);
    assert_eq!(db.int("SELECT count(*) FROM delivery_attempts").await, 3);
}

both!(a_rate_limit_reply_does_not_spend_an_attempt, rate_limited_body);
async fn rate_limited_body(db: &TestDb) {
    one_due_invoice(db).await;
    let server = twilio(
        ResponseTemplate::new(429)
            .insert_header("Retry-After", "120")
            .set_body_json(json!({"code": 20429, "message": "Too Many Requests", "status": 429})),
    )
    .await;
    let doc = run(db, &server, "2025-11-17T09:00:00+07:00", &[]).await;
    assert_eq!((count(&doc, "deferred"), count(&doc, "retried")), (1, 0), "{doc}");
    assert_eq!(db.int("SELECT attempts FROM messages").await, 0);
    assert_eq!(db.text("SELECT status FROM messages").await.as_deref(), Some("pending"));
    // Honours Retry-After: still waiting after 90 s, sent after 2 minutes.
    let doc = run(db, &server, "2025-11-17T09:01:30+07:00", &[]).await;
    assert_eq!(count(&doc, "deferred"), 0);
    let ok = twilio(created()).await;
    let doc = run(db, &ok, "2025-11-17T09:02:30+07:00", &[]).await;
    assert_eq!(count(&doc, "sent"), 1, "{doc}");
}

both!(a_rate_limit_reply_rests_the_channel_for_the_rest_of_the_pass, rate_limit_rest_body);
async fn rate_limit_rest_body(db: &TestDb) {
    due_invoices(db, 3).await;
    let server = twilio(
        ResponseTemplate::new(429)
            .set_body_json(json!({"code": 20429, "message": "Too Many Requests", "status": 429})),
    )
    .await;
    let doc = run(db, &server, "2025-11-17T09:00:00+07:00", &[("REMINDER_CONCURRENCY", "1")]).await;
    // The provider said "slow down": the pass asks it nothing more on this channel.
    assert_eq!(server.received_requests().await.unwrap_or_default().len(), 1, "{doc}");
    assert_eq!((count(&doc, "deferred"), count(&doc, "retried")), (1, 0), "{doc}");
    let note = doc["channels"][0]["note"].as_str().unwrap_or_default();
    assert!(note.contains("rate limited by the provider"), "{doc}");
    assert_eq!(db.int("SELECT count(*) FROM messages WHERE status = 'pending'").await, 3);
    assert_eq!(db.int("SELECT sum(attempts) FROM messages").await, 0);
    // It resumes on a later pass, after the provider's rest.
    let ok = twilio(created()).await;
    let doc = run(db, &ok, "2025-11-17T09:05:00+07:00", &[]).await;
    assert_eq!(count(&doc, "sent"), 3, "{doc}");
}

both!(bad_credentials_pause_the_channel_and_keep_every_message, channel_down_body);
async fn channel_down_body(db: &TestDb) {
    due_invoices(db, 3).await;
    let server = twilio(
        ResponseTemplate::new(401)
            .set_body_json(json!({"code": 20003, "message": "Authenticate", "status": 401})),
    )
    .await;
    let doc = run(db, &server, "2025-11-17T09:00:00+07:00", &[("REMINDER_CONCURRENCY", "1")]).await;
    assert_eq!(count(&doc, "failed"), 0, "{doc}");
    // A channel that is down says nothing about the message: deferred, not retried.
    assert_eq!((count(&doc, "deferred"), count(&doc, "retried")), (1, 0), "{doc}");
    assert_eq!(server.received_requests().await.unwrap_or_default().len(), 1, "the channel stops");
    assert_eq!(db.int("SELECT count(*) FROM messages WHERE status = 'pending'").await, 3);
    assert_eq!(db.int("SELECT sum(attempts) FROM messages").await, 0);

    let env = twilio_env(&server.uri());
    let status = db.pass(&["status", "--now", "2025-11-17T09:01:00+07:00"], &pairs(&env)).await;
    let whatsapp = &status["channels"][0];
    assert_eq!(whatsapp["channel"], "whatsapp");
    assert!(whatsapp["down"]["reason"].as_str().unwrap_or_default().contains("20003"), "{status}");

    // Fixed credentials: the next pass sends everything and the channel is up again.
    let ok = twilio(created()).await;
    let doc = run(db, &ok, "2025-11-17T09:02:00+07:00", &[]).await;
    assert_eq!(count(&doc, "sent"), 3, "{doc}");
    let status = db.pass(&["status", "--now", "2025-11-17T09:03:00+07:00"], &pairs(&env)).await;
    assert!(status["channels"][0]["down"].is_null(), "{status}");
}

both!(a_provider_that_redirects_takes_the_channel_down_and_keeps_every_message, redirect_body);
async fn redirect_body(db: &TestDb) {
    due_invoices(db, 2).await;
    // A proxy in front of the provider points elsewhere. Followed, a 301 would turn the POST
    // into a GET without its body (the message fails for a setup mistake), and a 308 would
    // resend it to whatever the proxy names.
    for (status, minute) in [(301, "09:00"), (308, "09:10")] {
        let server = MockServer::start().await;
        let elsewhere = format!("{}/moved/Messages.json?token=s3cr3t-in-the-url", server.uri());
        Mock::given(method("POST"))
            .and(path(TWILIO_PATH))
            .respond_with(ResponseTemplate::new(status).insert_header("location", elsewhere))
            .mount(&server)
            .await;
        Mock::given(path("/moved/Messages.json")).respond_with(created()).mount(&server).await;
        let now = format!("2025-11-17T{minute}:00+07:00");
        let doc = run(db, &server, &now, &[("REMINDER_CONCURRENCY", "1")]).await;
        let asked = server.received_requests().await.unwrap_or_default();
        assert_eq!(asked.len(), 1, "{status}: the redirect was followed: {asked:?}");
        assert_eq!((count(&doc, "sent"), count(&doc, "failed")), (0, 0), "{doc}");
        assert_eq!((count(&doc, "deferred"), count(&doc, "retried")), (1, 0), "{doc}");
        let note = doc["channels"][0]["note"].as_str().unwrap_or_default();
        assert!(note.contains(&format!("HTTP {status}, a redirect to {}", server.uri())), "{doc}");
        assert!(!doc.to_string().contains("s3cr3t"), "{doc}");
        assert_eq!(db.int("SELECT count(*) FROM messages WHERE status = 'pending'").await, 2);
        assert_eq!(db.int("SELECT sum(attempts) FROM messages").await, 0);
        let env = twilio_env(&server.uri());
        let status_doc = db.pass(&["status", "--now", &now], &pairs(&env)).await;
        let down = status_doc["channels"][0]["down"]["reason"].as_str().unwrap_or_default();
        assert!(down.contains("redirects are not followed"), "{status_doc}");
    }
    // The base URL fixed: both go, once each.
    let ok = twilio(created()).await;
    let doc = run(db, &ok, "2025-11-17T09:20:00+07:00", &[]).await;
    assert_eq!(count(&doc, "sent"), 2, "{doc}");
    assert_eq!(ok.received_requests().await.unwrap_or_default().len(), 2);
}

both!(outside_the_send_window_nothing_is_sent, window_body);
async fn window_body(db: &TestDb) {
    one_due_invoice(db).await;
    let server = twilio(created()).await;
    let window = [("REMINDER_SEND_WINDOW", "08:00-20:00")];
    let doc = run(db, &server, "2025-11-17T20:00:00+07:00", &window).await;
    assert_eq!((count(&doc, "generated"), count(&doc, "sent")), (1, 0));
    assert!(server.received_requests().await.unwrap_or_default().is_empty());
    let doc = run(db, &server, "2025-11-18T07:59:00+07:00", &window).await;
    assert_eq!(count(&doc, "sent"), 0);
    let doc = run(db, &server, "2025-11-18T08:00:00+07:00", &window).await;
    assert_eq!(count(&doc, "sent"), 1);
}

both!(overlapping_passes_deliver_each_reminder_once, overlap_body);
async fn overlap_body(db: &TestDb) {
    for n in 0..40 {
        contact(db, &format!("C{n}"), &format!("08123456{n:04}"), "whatsapp").await;
        invoice(db, n + 1, &format!("INV-{n}"), "2025-11-20").await;
    }
    // A daily message whose run time has come: exactly one pass may queue and advance it.
    db.exec(
        "INSERT INTO scheduled_messages (contact_id, body, scheduled_at, recurrence) \
         VALUES (1, 'Harian', '2025-11-10T08:00:00+07:00', 'daily')",
    )
    .await;
    let server = twilio(created().set_delay(Duration::from_millis(20))).await;
    let env = twilio_env(&server.uri());
    let env = pairs(&env);
    let passes: Vec<_> = (0..4)
        .map(|_| {
            db.command(&["run", "--json", "--now", "2025-11-17T09:00:00+07:00"], &env).output()
        })
        .collect();
    let mut sent = 0;
    for out in futures::future::join_all(passes).await {
        let out = out.expect("pass ran");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let doc: Value = serde_json::from_slice(&out.stdout).expect("json");
        sent += count(&doc, "sent");
    }
    let requests = server.received_requests().await.unwrap_or_default();
    let mut recipients: Vec<String> = requests
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).to_string())
        .filter_map(|b| b.split('&').find(|p| p.starts_with("To=")).map(str::to_string))
        .collect();
    recipients.sort();
    recipients.dedup();
    assert_eq!(requests.len(), 41, "each reminder reached the provider once");
    assert_eq!(recipients.len(), 40, "40 contacts, one of them also got the scheduled message");
    assert_eq!(sent, 41);
    assert_eq!(db.int("SELECT count(*) FROM messages WHERE status = 'sent'").await, 41);
    assert_eq!(db.int("SELECT count(*) FROM messages WHERE kind = 'scheduled'").await, 1);
}

both!(a_killed_pass_leaves_its_messages_to_the_next_pass_after_the_lease, crash_body);
async fn crash_body(db: &TestDb) {
    for n in 0..3 {
        contact(db, &format!("C{n}"), &format!("08123456{n:04}"), "whatsapp").await;
        invoice(db, n + 1, &format!("INV-{n}"), "2025-11-20").await;
    }
    // The provider hangs, and the pass is killed with requests in flight. A 1 s request
    // timeout makes the lease 6 s on the real clock (the timeout × (2 + 4 per delivery slot)).
    let hanging = twilio(created().set_delay(Duration::from_secs(60))).await;
    let timeout = [("REMINDER_HTTP_TIMEOUT", "1")];
    let mut env = twilio_env(&hanging.uri());
    env.push(("REMINDER_HTTP_TIMEOUT", "1".into()));
    let mut child = db
        .command(&["run", "--now", "2025-11-17T09:00:00+07:00"], &pairs(&env))
        .spawn()
        .expect("spawn");
    for _ in 0..200 {
        if hanging.received_requests().await.unwrap_or_default().len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().await.expect("kill -9");
    assert_eq!(db.int("SELECT count(*) FROM messages WHERE status = 'sending'").await, 3);

    // While the lease holds, another pass leaves them alone, whatever its --now says: leases run
    // on the real clock.
    let ok = twilio(created()).await;
    let doc = run(db, &ok, "2025-11-17T09:30:00+07:00", &timeout).await;
    assert_eq!(count(&doc, "sent"), 0, "{doc}");
    // After it ends, they are retried: the attempt the dead pass made is not counted (its
    // answer was never recorded), the expired lease is.
    tokio::time::sleep(Duration::from_millis(6500)).await;
    let doc = run(db, &ok, "2025-11-17T09:00:10+07:00", &timeout).await;
    assert_eq!(count(&doc, "sent"), 3, "{doc}");
    assert_eq!(db.int("SELECT max(attempts) FROM messages").await, 1);
    assert_eq!(db.int("SELECT min(expired_leases) FROM messages").await, 1);
}

both!(a_pass_that_lost_its_lease_cannot_overwrite_the_next_one, lost_lease_body);
async fn lost_lease_body(db: &TestDb) {
    use reminderctl::domain::channel::ChannelKind;
    use reminderctl::domain::outbox::{Answer, Resolution};
    use reminderctl::store::ClaimRequest;
    one_due_invoice(db).await;
    let (store, t0, _) = crate::helpers::store_with_t3_queued(db).await;
    let route = reminderctl::domain::channel::Route::of(ChannelKind::WhatsApp);
    let claim = |token: &'static str, lease: Duration| ClaimRequest {
        route: &route,
        limit: 10,
        token,
        now: t0,
        lease,
        only_scheduled: false,
    };
    let a = store.claim(&claim("pass-a", Duration::from_millis(300))).await.expect("claim a");
    assert_eq!(a.len(), 1);
    let id = a[0].id();
    assert!(store.claim(&claim("pass-b", Duration::from_secs(45))).await.expect("b").is_empty());
    // The lease runs on the real clock: a later business time does not end it, time does.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let b = store.claim(&claim("pass-b", Duration::from_secs(45))).await.expect("claim b");
    assert_eq!(b.len(), 1, "an expired lease is taken back");
    assert_eq!(b[0].row.as_ref().map(|r| r.expired_leases).ok(), Some(1));

    let later = t0 + chrono::Duration::seconds(60);
    let outcome =
        |resolution, answer| crate::helpers::twilio_outcome(id, answer, resolution, later);
    let failed = Resolution::Failed { reason: "late failure".into(), fallback: None };
    let lost = store.record("pass-a", &[outcome(failed, Answer::Permanent)]).await.expect("a");
    assert_eq!(lost.lost, vec![id]);
    assert_eq!(db.text("SELECT status FROM messages").await.as_deref(), Some("sending"));
    let sent = Resolution::Sent { provider_message_id: Some("SM1".into()) };
    let lost = store.record("pass-b", &[outcome(sent, Answer::Accepted)]).await.expect("b");
    assert!(lost.lost.is_empty());
    assert_eq!(db.text("SELECT status FROM messages").await.as_deref(), Some("sent"));
    assert_eq!(db.int("SELECT attempts FROM messages").await, 1);
    assert_eq!(
        db.int("SELECT count(*) FROM delivery_attempts WHERE outcome = 'late permanent'").await,
        1
    );
}

both!(concurrent_first_starts_migrate_safely, concurrent_migrations_body);
async fn concurrent_migrations_body(db: &TestDb) {
    // A database nobody has migrated yet: a new SQLite file, or the test's own PostgreSQL
    // database emptied.
    let url = if db.is_postgres() {
        db.exec("DROP SCHEMA public CASCADE; CREATE SCHEMA public").await;
        db.url.clone()
    } else {
        format!("sqlite:{}", db.dir.path().join("fresh.db").display())
    };
    let starts: Vec<_> = (0..6)
        .map(|_| db.command(&["status", "--json", "--database-url", &url], &[]).output())
        .collect();
    for out in futures::future::join_all(starts).await {
        let out = out.expect("ran");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

both!(overlapping_passes_share_one_rate_limit, shared_rate_body);
async fn shared_rate_body(db: &TestDb) {
    for n in 0..20 {
        contact(db, &format!("C{n}"), &format!("08123456{n:04}"), "whatsapp").await;
        invoice(db, n + 1, &format!("INV-{n}"), "2025-11-20").await;
    }
    db.pass(&["generate", "--now", "2025-11-17T09:00:00+07:00"], &[]).await;
    let server = twilio(created()).await;
    // 2 per second and a 2-second pass budget: slots at 0, 0.5, 1, 1.5 and 2 s. Two passes that
    // start together share those five slots; each on its own limiter would send ten.
    let mut env = twilio_env(&server.uri());
    env.retain(|(k, _)| *k != "REMINDER_WHATSAPP_RATE");
    env.push(("REMINDER_WHATSAPP_RATE", "2/s".into()));
    env.push(("REMINDER_PASS_SECONDS", "2".into()));
    let env = pairs(&env);
    let passes: Vec<_> = (0..2)
        .map(|_| {
            db.command(&["send", "--json", "--now", "2025-11-17T09:00:00+07:00"], &env).output()
        })
        .collect();
    let mut sent = 0;
    for out in futures::future::join_all(passes).await {
        let out = out.expect("pass ran");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let doc: Value = serde_json::from_slice(&out.stdout).expect("json");
        sent += count(&doc, "sent");
    }
    // At most the five slots (six if a pass reads its clock on a slot's edge); fewer when a
    // loaded machine starts a pass late into its budget, which ends two seconds after its start.
    assert!((3..=6).contains(&sent), "two passes sent {sent} in 2 s at 2/s");
    assert_eq!(server.received_requests().await.unwrap_or_default().len() as u64, sent);
    assert_eq!(
        db.int("SELECT count(*) FROM messages WHERE status = 'pending'").await,
        20 - sent as i64
    );
}

both!(telegram_messages_go_to_the_contacts_chat, telegram_body);
async fn telegram_body(db: &TestDb) {
    contact(db, "Tele", "081234567890", "telegram,whatsapp").await;
    invoice(db, 1, "INV-9", "2025-11-20").await;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/bot123456:test-token/sendMessage"))
        .and(body_string_contains("\"chat_id\":42"))
        .and(body_string_contains("INV-9"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(
                json!({"ok": true, "result": {"message_id": 777, "chat": {"id": 42}}}),
            ),
        )
        .expect(1)
        .mount(&server)
        .await;
    let uri = server.uri();
    let env = [("TELEGRAM_BOT_TOKEN", "123456:test-token"), ("TELEGRAM_API_BASE", uri.as_str())];
    let doc = db.pass(&["run", "--now", "2025-11-17T09:00:00+07:00"], &env).await;
    assert_eq!(count(&doc, "sent"), 1, "{doc}");
    assert_eq!(db.text("SELECT provider_message_id FROM messages").await.as_deref(), Some("777"));
    assert_eq!(db.text("SELECT recipient FROM messages").await.as_deref(), Some("42"));
}

both!(the_send_window_is_checked_again_before_each_send, window_recheck_body);
async fn window_recheck_body(db: &TestDb) {
    for i in 0..12 {
        contact(db, &format!("P{i}"), &format!("08121000{i:04}"), "whatsapp").await;
        invoice(db, i + 1, &format!("INV-{i}"), "2025-11-20").await;
    }
    // Each request takes 3 s; the window closes 2 s into the pass. The first REMINDER_CONCURRENCY
    // sends start inside it; what was claimed with them must not start once it has closed.
    let server = twilio(created().set_delay(Duration::from_secs(3))).await;
    let mut env = twilio_env(&server.uri());
    env.push(("REMINDER_SEND_WINDOW", "08:00-20:00".to_string()));
    env.push(("REMINDER_CONCURRENCY", "4".to_string()));
    let doc = db.pass(&["run", "--now", "2025-11-17T19:59:58+07:00"], &pairs(&env)).await;
    let got = server.received_requests().await.unwrap_or_default().len();
    assert_eq!(got, 4, "{doc}");
    assert_eq!(count(&doc, "sent"), 4, "{doc}");
    assert_eq!(db.int("SELECT count(*) FROM messages WHERE status = 'pending'").await, 8);
    assert_eq!(
        db.int("SELECT count(*) FROM messages WHERE attempts > 0 AND status = 'pending'").await,
        0
    );
    assert!(doc.to_string().contains("the send window closed during the pass"), "{doc}");
}

/// The default WhatsApp route's row of `status --json`.
fn default_whatsapp(out: &std::process::Output) -> Value {
    let status: Value = serde_json::from_slice(&out.stdout).expect("json");
    status["channels"]
        .as_array()
        .and_then(|c| c.iter().find(|r| r["channel"] == "whatsapp" && r["connection"].is_null()))
        .cloned()
        .unwrap_or_default()
}

both!(
    a_lease_that_ran_out_on_the_real_clock_counts_as_due_and_a_live_one_does_not,
    leases_due_body
);
async fn leases_due_body(db: &TestDb) {
    for i in 0..3 {
        contact(db, &format!("L{i}"), &format!("08122000{i:04}"), "whatsapp").await;
        invoice(db, i + 1, &format!("INV-L{i}"), "2025-11-20").await;
    }
    db.pass(&["generate", "--now", "2025-11-17T09:00:00+07:00"], &LOG_CHANNELS).await;
    // Held by passes, one whose lease ran out long ago and one whose lease runs for centuries;
    // the business clock `--now` has no say in either.
    let hold = |id: i64, until: &str| {
        format!(
            "UPDATE messages SET status = 'sending', claimed_by = 'gone', \
             claimed_until = '{until}' WHERE subject_id = {id}"
        )
    };
    db.exec(&hold(2, "2000-01-01T00:00:00.000Z")).await;
    db.exec(&hold(3, "2999-01-01T00:00:00.000Z")).await;
    let now = ["--now", "2025-11-17T09:05:00+07:00"];
    let status = db.run(&[&["status", "--json"][..], &now].concat(), &LOG_CHANNELS).await;
    let wa = default_whatsapp(&status);
    assert_eq!(wa["due"], 2, "{wa}");
    let doc = db.pass(&[&["send", "--dry-run"][..], &now].concat(), &LOG_CHANNELS).await;
    let mut numbers: Vec<String> = details(&doc)
        .iter()
        .filter_map(|d| d["invoice_number"].as_str().map(String::from))
        .collect();
    numbers.sort();
    assert_eq!(numbers, ["INV-L0", "INV-L1"], "{doc}");
}

both!(status_says_when_the_rate_limit_holds_messages, rate_held_body);
async fn rate_held_body(db: &TestDb) {
    for i in 0..3 {
        contact(db, &format!("P{i}"), &format!("08121000{i:04}"), "whatsapp").await;
        invoice(db, i + 1, &format!("INV-{i}"), "2025-11-20").await;
    }
    let server = twilio(created()).await;
    let mut env = twilio_env(&server.uri());
    env.retain(|(k, _)| *k != "REMINDER_WHATSAPP_RATE");
    env.push(("REMINDER_WHATSAPP_RATE", "1/min".to_string()));
    env.push(("REMINDER_PASS_SECONDS", "2".to_string()));
    let doc = db.pass(&["run", "--now", "2025-11-17T09:00:00+07:00"], &pairs(&env)).await;
    assert_eq!(count(&doc, "sent"), 1, "{doc}");
    let wa = default_whatsapp(&db.run(&["status", "--json"], &pairs(&env)).await);
    let wait = wa["rate_limit_wait_seconds"].as_f64().unwrap_or(0.0);
    assert!(wait > 30.0 && wait <= 60.0, "{wa}");
    assert_eq!(wa["due"], 2, "{wa}");
    let out = db.run(&["status"], &pairs(&env)).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("held by the rate limit: next send slot in"), "{text}");
}
