//! Scheduled messages as seed 004's users keep them (create, view, edit, delete, track each
//! one's status), seed 001's broadcast to many contacts through its own WhatsApp number, and
//! every seed's way of addressing people: all-of (`+`) and first-of (`,`) channels.

use std::time::Duration;

use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::both;
use crate::helpers::{
    contact, count, details, invoice, pairs, Sink, TestDb, LOG_CHANNELS, TWILIO_PATH,
};

const NOW: &str = "2025-11-17T09:00:00+07:00";

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

async fn three_contacts(db: &TestDb) {
    contact(db, "Budi", "081234567801", "whatsapp").await;
    contact(db, "Siti", "081234567802", "whatsapp").await;
    contact(db, "Agus", "081234567803", "whatsapp").await;
}

/// `schedule …` with `--json`; panics unless it exits 0.
async fn schedule(db: &TestDb, args: &[&str]) -> Value {
    let mut all = vec!["schedule"];
    all.extend_from_slice(args);
    db.pass(&all, &LOG_CHANNELS).await
}

async fn refused(db: &TestDb, args: &[&str]) -> String {
    let mut all = vec!["schedule"];
    all.extend_from_slice(args);
    let out = db.run(&all, &LOG_CHANNELS).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    text(&out)
}

both!(schedule_add_makes_one_row_per_contact_and_list_shows_them, add_body);
async fn add_body(db: &TestDb) {
    three_contacts(db).await;
    let added = schedule(
        db,
        &[
            "add",
            "--now",
            NOW,
            "--contact",
            "1,2,3",
            "--at",
            "2025-11-17 22:00",
            "--body",
            "Halo {{ name }}, tagihan Anda sudah terbit",
            "--created-by",
            "budi",
        ],
    )
    .await;
    let ids: Vec<i64> =
        added.as_array().unwrap().iter().map(|a| a["id"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), 3, "{added}");
    // Local time in REMINDER_TIMEZONE: 22:00 in Jakarta is 15:00 UTC.
    assert_eq!(added[0]["first_run"], "2025-11-17T15:00:00Z", "{added}");
    let listed = schedule(db, &["list", "--now", NOW, "--created-by", "budi"]).await;
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");
    assert_eq!(listed[0]["status"], "pending");
    let out = db.run(&["schedule", "list", "--contact", "2"], &LOG_CHANNELS).await;
    assert!(
        text(&out).contains("Siti (contact 2)") && !text(&out).contains("Budi ("),
        "{}",
        text(&out)
    );

    // At its time it goes out, with the contact's name in it, and the row says so.
    let doc = db.pass(&["run", "--now", "2025-11-17T22:00:30+07:00"], &LOG_CHANNELS).await;
    assert_eq!(count(&doc, "sent"), 3, "{doc}");
    let body = db.text("SELECT body FROM messages WHERE contact_id = 2").await.unwrap_or_default();
    assert_eq!(body, "Halo Siti, tagihan Anda sudah terbit");
    let listed = schedule(db, &["list"]).await;
    for row in listed.as_array().unwrap() {
        assert_eq!(row["status"], "sent", "{row}");
        assert!(row["message_id"].as_str().is_some_and(|m| m.starts_with("log-")), "{row}");
        assert!(row["sent_at"].is_string(), "{row}");
    }
}

both!(schedule_add_refuses_what_cannot_work_and_writes_nothing, refuse_body);
async fn refuse_body(db: &TestDb) {
    three_contacts(db).await;
    let base = ["add", "--now", NOW, "--contact", "1"];
    let cases: [(&[&str], &str); 7] = [
        (&["--at", "2025-11-17 08:00", "--body", "x"], "--at: 2025-11-17 08:00 WIB is in the past"),
        (&["--at", "besok", "--body", "x"], "--at: 'besok' is not a time"),
        (
            &["--at", "2025-11-18 08:00", "--body", "Halo {{ nama_pelanggan }}"],
            "--body: undefined variable 'nama_pelanggan'",
        ),
        (
            &["--at", "2025-11-18 08:00", "--body", "x", "--channel", "sms"],
            "--channel: unknown channel 'sms'",
        ),
        (
            &["--at", "2025-11-18 08:00", "--body", "x", "--connection", "gudang"],
            "--connection: 'gudang' is not a configured WhatsApp connection",
        ),
        (
            &["--at", "2025-11-18 08:00", "--body", "x", "--every", "yearly"],
            "--every: invalid recurrence 'yearly'",
        ),
        (
            &["--at", "2025-11-18 08:00", "--body", "x", "--media-url", "file:///etc/passwd"],
            "--media-url: is not a public http(s) URL",
        ),
    ];
    for (extra, expected) in cases {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        let out = refused(db, &args).await;
        assert!(out.contains(&format!("error: {expected}")), "{extra:?}: {out}");
    }
    let out = refused(
        db,
        &["add", "--now", NOW, "--contact", "1,9", "--at", "2025-11-18 08:00", "--body", "x"],
    )
    .await;
    assert!(out.contains("error: --contact: no contact 9"), "{out}");
    assert_eq!(db.int("SELECT count(*) FROM scheduled_messages").await, 0);
    // A recurring message may start in the past: it begins with its next occurrence.
    let added = schedule(
        db,
        &[
            "add",
            "--now",
            NOW,
            "--contact",
            "1",
            "--at",
            "2025-11-10 08:00",
            "--body",
            "x",
            "--every",
            "daily",
        ],
    )
    .await;
    assert_eq!(added[0]["first_run"], "2025-11-18T01:00:00Z", "{added}");
}

both!(only_its_creator_may_edit_or_cancel_a_scheduled_message, ownership_body);
async fn ownership_body(db: &TestDb) {
    three_contacts(db).await;
    schedule(
        db,
        &[
            "add",
            "--now",
            NOW,
            "--contact",
            "1",
            "--at",
            "2025-11-18 08:00",
            "--body",
            "Halo",
            "--created-by",
            "budi",
        ],
    )
    .await;
    for args in [
        &["edit", "1", "--body", "Diganti", "--created-by", "siti"][..],
        &["cancel", "1", "--created-by", "siti"],
    ] {
        let out = refused(db, args).await;
        assert!(
            out.contains("error: scheduled message 1 was created by 'budi', not by 'siti'"),
            "{out}"
        );
    }
    let listed = schedule(db, &["list", "--created-by", "siti"]).await;
    assert!(listed.as_array().unwrap().is_empty(), "a user lists only their own: {listed}");
    let edited = schedule(
        db,
        &["edit", "1", "--now", NOW, "--body", "Halo lagi {{ name }}", "--created-by", "budi"],
    )
    .await;
    assert_eq!(edited["body"], "Halo lagi {{ name }}");
    let done = schedule(db, &["cancel", "1", "--created-by", "budi"]).await;
    assert_eq!(done["cancelled"]["status"], "cancelled", "{done}");
    let out = refused(db, &["cancel", "1"]).await;
    assert!(out.contains("error: scheduled message 1 is cancelled"), "{out}");
    let out = refused(db, &["edit", "7", "--body", "x"]).await;
    assert!(out.contains("error: no scheduled message 7"), "{out}");
}

both!(an_app_writes_and_reads_scheduled_messages_in_seed_004s_vocabulary, vocabulary_body);
async fn vocabulary_body(db: &TestDb) {
    three_contacts(db).await;
    // As seed 004's app writes them: status 'pending', one good, one for a number that fails.
    db.exec(
        "INSERT INTO scheduled_messages (contact_id, body, scheduled_at, recurrence, status) VALUES \
         (1, 'Sekali', '2025-11-17T08:00:00+07:00', 'none', 'pending'), \
         (2, 'Harian', '2025-11-16T08:00:00+07:00', 'daily', 'pending'), \
         (3, 'Gagal', '2025-11-17T08:00:00+07:00', 'none', 'pending')",
    )
    .await;
    db.exec("UPDATE contacts SET phone = '0211234567' WHERE id = 3").await;
    db.pass(&["run", "--now", NOW], &LOG_CHANNELS).await;
    let row = |id: i64| {
        format!(
            "SELECT status || '|' || COALESCE(error, '-') FROM scheduled_messages WHERE id = {id}"
        )
    };
    assert_eq!(db.text(&row(1)).await.as_deref(), Some("sent|-"));
    assert!(db.text("SELECT message_id FROM scheduled_messages WHERE id = 1").await.is_some());
    // The recurring one is back to pending, with its next run and its last delivery.
    assert_eq!(db.text(&row(2)).await.as_deref(), Some("pending|-"));
    assert!(db
        .text("SELECT CAST(sent_at AS TEXT) FROM scheduled_messages WHERE id = 2")
        .await
        .is_some());
    let next =
        db.text("SELECT CAST(next_run_at AS TEXT) FROM scheduled_messages WHERE id = 2").await;
    assert!(next.as_deref().is_some_and(|n| n.starts_with("2025-11-18")), "{next:?}");
    let failed = db.text(&row(3)).await.unwrap_or_default();
    assert!(
        failed.starts_with("failed|") && failed.contains("not an Indonesian mobile number"),
        "{failed}"
    );
}

both!(a_change_after_queueing_is_honoured_at_send_time, honoured_body);
async fn honoured_body(db: &TestDb) {
    three_contacts(db).await;
    for (contact, body) in [(1, "Lama"), (2, "Batal"), (3, "Hapus")] {
        db.exec(&format!(
            "INSERT INTO scheduled_messages (contact_id, body, scheduled_at) \
             VALUES ({contact}, '{body}', '2025-11-17T08:00:00+07:00')"
        ))
        .await;
    }
    // Queued while the provider cannot send…
    db.pass(&["generate", "--now", NOW], &[]).await;
    assert_eq!(db.int("SELECT count(*) FROM messages WHERE status = 'pending'").await, 3);
    // …then edited, cancelled and deleted by the app before it went out.
    db.exec("UPDATE scheduled_messages SET body = 'Baru {{ name }}' WHERE id = 1").await;
    db.exec("UPDATE scheduled_messages SET status = 'cancelled' WHERE id = 2").await;
    db.exec("DELETE FROM scheduled_messages WHERE id = 3").await;
    let doc = db.pass(&["send", "--now", NOW], &LOG_CHANNELS).await;
    assert_eq!((count(&doc, "sent"), count(&doc, "cancelled")), (1, 2), "{doc}");
    assert_eq!(
        db.text("SELECT body FROM messages WHERE subject_id = 1").await.as_deref(),
        Some("Baru Budi")
    );
    let reasons: Vec<String> =
        details(&doc).iter().filter_map(|d| d["error"].as_str().map(str::to_string)).collect();
    assert!(reasons.iter().any(|r| r.contains("was cancelled")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("was deleted")), "{reasons:?}");
}

both!(a_one_off_moved_later_after_queueing_waits_for_its_new_time, moved_body);
async fn moved_body(db: &TestDb) {
    three_contacts(db).await;
    schedule(
        db,
        &["add", "--now", NOW, "--contact", "1", "--at", "2025-11-17 09:30", "--body", "Halo"],
    )
    .await;
    db.pass(&["generate", "--now", "2025-11-17T09:31:00+07:00"], &[]).await;
    // Through the command: the queued occurrence follows it.
    schedule(db, &["edit", "1", "--now", "2025-11-17T09:31:00+07:00", "--at", "2025-11-17 11:00"])
        .await;
    let doc = db.pass(&["run", "--now", "2025-11-17T09:32:00+07:00"], &LOG_CHANNELS).await;
    assert_eq!(count(&doc, "sent"), 0, "{doc}");
    // Written by an app straight into the table: it waits too.
    db.exec(
        "UPDATE scheduled_messages SET scheduled_at = '2025-11-17T12:00:00+07:00' WHERE id = 1",
    )
    .await;
    let doc = db.pass(&["run", "--now", "2025-11-17T11:01:00+07:00"], &LOG_CHANNELS).await;
    assert_eq!((count(&doc, "sent"), count(&doc, "deferred")), (0, 1), "{doc}");
    let doc = db.pass(&["run", "--now", "2025-11-17T12:00:30+07:00"], &LOG_CHANNELS).await;
    assert_eq!(count(&doc, "sent"), 1, "{doc}");
    assert_eq!(db.int("SELECT count(*) FROM messages").await, 1, "one occurrence, sent once");
}

both!(after_an_outage_a_daily_message_sends_only_its_latest_occurrence, outage_body);
async fn outage_body(db: &TestDb) {
    three_contacts(db).await;
    db.exec(
        "INSERT INTO scheduled_messages (contact_id, body, scheduled_at, recurrence) \
         VALUES (1, 'Harian', '2025-11-10T08:00:00+07:00', 'daily')",
    )
    .await;
    // Monday's occurrence is queued, but nothing can be sent (no provider)…
    db.pass(&["run", "--now", "2025-11-17T08:05:00+07:00"], &[]).await;
    // …until Wednesday: Monday's is overtaken and cancelled; Tuesday's was skipped.
    let doc = db.pass(&["run", "--now", "2025-11-19T08:05:00+07:00"], &LOG_CHANNELS).await;
    assert_eq!(count(&doc, "sent"), 1, "{doc}");
    let cancelled = db.text("SELECT last_error FROM messages WHERE status = 'cancelled'").await;
    assert!(cancelled.unwrap_or_default().contains("overtaken"), "the stale one is cancelled");
    let sent_key =
        db.text("SELECT dedup_key FROM messages WHERE status = 'sent'").await.unwrap_or_default();
    // 2025-11-19 08:00 in Jakarta.
    assert!(sent_key.ends_with(":1763514000"), "{sent_key}");
}

both!(a_body_naming_an_unknown_field_fails_that_message_naming_it, unknown_field_body);
async fn unknown_field_body(db: &TestDb) {
    three_contacts(db).await;
    db.exec(
        "INSERT INTO scheduled_messages (contact_id, body, scheduled_at) VALUES \
         (1, 'Halo {{ nama }}', '2025-11-17T08:00:00+07:00'), \
         (2, 'Halo {{ name }}', '2025-11-17T08:00:00+07:00')",
    )
    .await;
    let doc = db.pass(&["run", "--now", NOW], &LOG_CHANNELS).await;
    assert_eq!((count(&doc, "sent"), count(&doc, "failed")), (1, 1), "{doc}");
    let error = db
        .text("SELECT last_error FROM messages WHERE status = 'failed'")
        .await
        .unwrap_or_default();
    assert!(error.contains("undefined variable 'nama'"), "{error}");
}

both!(
    scheduled_messages_go_at_their_chosen_time_unless_their_own_window_says_otherwise,
    window_body
);
async fn window_body(db: &TestDb) {
    three_contacts(db).await;
    invoice(db, 1, "INV-1", "2025-11-20").await;
    db.exec("INSERT INTO scheduled_messages (contact_id, body, scheduled_at) VALUES (2, 'Malam', '2025-11-17T22:00:00+07:00')").await;
    let mut env = LOG_CHANNELS.to_vec();
    env.push(("REMINDER_SEND_WINDOW", "08:00-20:00"));
    // At 22:00 the dunning reminder waits for the morning; the 22:00 message a person chose goes.
    let doc = db.pass(&["run", "--now", "2025-11-17T22:00:30+07:00"], &env).await;
    assert_eq!(count(&doc, "sent"), 1, "{doc}");
    assert_eq!(
        db.text("SELECT kind FROM messages WHERE status = 'sent'").await.as_deref(),
        Some("scheduled")
    );
    // With REMINDER_SCHEDULED_SEND_WINDOW it waits as well.
    db.exec("INSERT INTO scheduled_messages (contact_id, body, scheduled_at) VALUES (3, 'Malam', '2025-11-17T22:00:00+07:00')").await;
    env.push(("REMINDER_SCHEDULED_SEND_WINDOW", "08:00-20:00"));
    let doc = db.pass(&["run", "--now", "2025-11-17T22:01:00+07:00"], &env).await;
    assert_eq!(count(&doc, "sent"), 0, "{doc}");
    let doc = db.pass(&["run", "--now", "2025-11-18T08:00:30+07:00"], &env).await;
    assert_eq!(count(&doc, "sent"), 2, "{doc}");
}

both!(a_closed_scheduled_window_holds_only_the_scheduled_messages, scheduled_window_body);
async fn scheduled_window_body(db: &TestDb) {
    three_contacts(db).await;
    invoice(db, 1, "INV-1", "2025-11-20").await;
    db.exec("INSERT INTO scheduled_messages (contact_id, body, scheduled_at) VALUES (2, 'Siang', '2025-11-17T11:00:00+07:00')").await;
    let mut env = LOG_CHANNELS.to_vec();
    env.push(("REMINDER_SEND_WINDOW", "08:00-20:00"));
    env.push(("REMINDER_SCHEDULED_SEND_WINDOW", "08:00-12:00"));
    // At 14:00 the rules' window is open and the scheduled one closed: the dunning reminder goes.
    let doc = db.pass(&["run", "--now", "2025-11-17T14:00:00+07:00"], &env).await;
    assert_eq!(count(&doc, "sent"), 1, "{doc}");
    assert_eq!(
        db.text("SELECT kind FROM messages WHERE status = 'sent'").await.as_deref(),
        Some("dunning")
    );
    assert_eq!(
        db.text("SELECT status FROM messages WHERE kind = 'scheduled'").await.as_deref(),
        Some("pending")
    );
    // The scheduled message goes when its own window opens.
    let doc = db.pass(&["run", "--now", "2025-11-18T08:00:30+07:00"], &env).await;
    assert_eq!(count(&doc, "sent"), 1, "{doc}");
    assert_eq!(db.int("SELECT count(*) FROM messages WHERE status = 'sent'").await, 2);
}

both!(whatsapp_plus_email_sends_each_stage_on_both_once, all_of_body);
async fn all_of_body(db: &TestDb) {
    db.exec("INSERT INTO contacts (name, phone, email, channels) VALUES ('Dimas', '081234567890', 'dimas@example.com', 'whatsapp + Email')").await;
    invoice(db, 1, "INV-1", "2025-11-20").await;
    let doc = db.pass(&["run", "--now", NOW], &LOG_CHANNELS).await;
    assert_eq!(count(&doc, "sent"), 2, "{doc}");
    let channels: Vec<String> = details(&doc)
        .iter()
        .filter(|d| d["status"] == "sent")
        .map(|d| d["channel"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        channels.contains(&"whatsapp".to_string()) && channels.contains(&"email".to_string()),
        "{channels:?}"
    );
    // A later change of preference never sends the stage again on a new channel.
    db.exec("UPDATE contacts SET channels = 'whatsapp+email+telegram', telegram_chat_id = '42'")
        .await;
    let doc = db.pass(&["run", "--now", "2025-11-18T09:00:00+07:00"], &LOG_CHANNELS).await;
    assert_eq!(count(&doc, "generated"), 0, "{doc}");
}

both!(whatsapp_plus_email_comma_telegram_falls_back_for_the_one_that_failed, all_of_fallback_body);
async fn all_of_fallback_body(db: &TestDb) {
    db.exec("INSERT INTO contacts (name, phone, email, telegram_chat_id, channels) VALUES ('Dimas', '0211234567', 'dimas@example.com', '42', 'whatsapp+email,telegram')").await;
    invoice(db, 1, "INV-1", "2025-11-20").await;
    let doc = db.pass(&["run", "--now", NOW], &LOG_CHANNELS).await;
    // The landline fails on WhatsApp; email goes; Telegram carries the WhatsApp one.
    assert_eq!((count(&doc, "sent"), count(&doc, "failed")), (2, 1), "{doc}");
    let sent = |channel: &str| {
        format!("SELECT count(*) FROM messages WHERE channel = '{channel}' AND status = 'sent'")
    };
    assert_eq!(db.int(&sent("email")).await, 1);
    assert_eq!(db.int(&sent("telegram")).await, 1);
}

both!(an_empty_or_unknown_channel_name_is_a_reason_on_the_row, channel_names_body);
async fn channel_names_body(db: &TestDb) {
    for (name, channels) in [("A", ",email"), ("B", "sms"), ("C", "whatsapp\n"), ("D", "email+sms")]
    {
        contact(db, name, "081234567890", channels).await;
    }
    for id in 1..=4 {
        invoice(db, id, &format!("INV-{id}"), "2025-11-20").await;
    }
    let doc = db.pass(&["run", "--now", NOW], &LOG_CHANNELS).await;
    // 'whatsapp\n' is whatsapp; 'email+sms' goes by email and says what 'sms' is.
    assert_eq!(count(&doc, "sent"), 2, "{doc}");
    let error = |id: i64| {
        format!("SELECT last_error FROM messages WHERE contact_id = {id} AND status = 'failed'")
    };
    assert!(db
        .text(&error(1))
        .await
        .unwrap_or_default()
        .contains("contacts 1 channels: an empty channel name"));
    assert!(db.text(&error(2)).await.unwrap_or_default().contains("'sms'"));
    assert!(db.text(&error(4)).await.unwrap_or_default().contains("unknown or empty channel name"));
}

fn twilio_ok(sid: &str) -> ResponseTemplate {
    ResponseTemplate::new(201).set_body_json(json!({"sid": sid, "status": "queued"}))
}

/// Two WhatsApp numbers: the default on one loopback Twilio, `gudang` on another.
fn two_numbers(default: &str, gudang: &str) -> Vec<(&'static str, String)> {
    let mut env = crate::helpers::twilio_env(default);
    env.extend([
        ("WHATSAPP_CONNECTIONS", "gudang".to_string()),
        ("WHATSAPP_GUDANG_PROVIDER", "twilio".to_string()),
        ("WHATSAPP_GUDANG_TWILIO_ACCOUNT_SID", "AC0123456789abcdef0123456789abcdef".to_string()),
        ("WHATSAPP_GUDANG_TWILIO_AUTH_TOKEN", "gudang-secret-token-77".to_string()),
        ("WHATSAPP_GUDANG_TWILIO_WHATSAPP_FROM", "+14155230000".to_string()),
        ("WHATSAPP_GUDANG_TWILIO_API_BASE", gudang.to_string()),
        ("WHATSAPP_GUDANG_RATE", "unlimited".to_string()),
    ]);
    env
}

both!(two_whatsapp_numbers_each_send_their_own_messages, connections_body);
async fn connections_body(db: &TestDb) {
    three_contacts(db).await;
    db.exec("UPDATE contacts SET whatsapp_connection = 'Gudang' WHERE id = 2").await;
    for id in 1..=3 {
        invoice(db, id, &format!("INV-{id}"), "2025-11-20").await;
    }
    db.exec("INSERT INTO scheduled_messages (contact_id, body, scheduled_at, connection) VALUES (1, 'Dari gudang', '2025-11-17T08:00:00+07:00', 'gudang')").await;
    let default = Sink::start(Duration::ZERO).await;
    let gudang = Sink::start(Duration::ZERO).await;
    let env = two_numbers(&default.uri(), &gudang.uri());
    let doc = db.pass(&["run", "--now", NOW], &pairs(&env)).await;
    assert_eq!(count(&doc, "sent"), 4, "{doc}");
    assert_eq!(default.count(), 2, "contacts 1 and 3 on the default number");
    assert_eq!(gudang.count(), 2, "contact 2's reminder and the scheduled message");
    let status = db.pass(&["status"], &pairs(&env)).await;
    let routes: Vec<String> = status["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{} {}",
                c["channel"].as_str().unwrap_or_default(),
                c["connection"].as_str().unwrap_or("-")
            )
        })
        .collect();
    assert!(
        routes.contains(&"whatsapp -".to_string())
            && routes.contains(&"whatsapp gudang".to_string()),
        "{routes:?}"
    );
}

both!(one_whatsapp_number_down_does_not_stop_the_other, connection_down_body);
async fn connection_down_body(db: &TestDb) {
    three_contacts(db).await;
    db.exec("UPDATE contacts SET whatsapp_connection = 'gudang' WHERE id = 2").await;
    for id in 1..=3 {
        invoice(db, id, &format!("INV-{id}"), "2025-11-20").await;
    }
    let down = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(TWILIO_PATH))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(json!({"code": 20003, "message": "Authenticate", "status": 401})),
        )
        .mount(&down)
        .await;
    let gudang = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(TWILIO_PATH))
        .respond_with(twilio_ok("SM9"))
        .mount(&gudang)
        .await;
    let env = two_numbers(&down.uri(), &gudang.uri());
    let doc = db.pass(&["run", "--now", NOW], &pairs(&env)).await;
    assert_eq!(count(&doc, "sent"), 1, "{doc}");
    let status = db.pass(&["status"], &pairs(&env)).await;
    let channel = |connection: Option<&str>| {
        status["channels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["channel"] == "whatsapp" && c["connection"].as_str() == connection)
            .cloned()
            .unwrap_or_default()
    };
    assert!(
        channel(None)["down"]["reason"].as_str().is_some_and(|r| r.contains("20003")),
        "{status}"
    );
    assert!(channel(Some("gudang"))["down"].is_null(), "{status}");
}

both!(a_monthly_quota_stops_before_it_is_exceeded_and_status_shows_it, quota_body);
async fn quota_body(db: &TestDb) {
    three_contacts(db).await;
    for id in 1..=3 {
        invoice(db, id, &format!("INV-{id}"), "2025-11-20").await;
    }
    let sink = Sink::start(Duration::ZERO).await;
    let mut env = crate::helpers::twilio_env(&sink.uri());
    env.push(("WHATSAPP_MONTHLY_QUOTA", "2".into()));
    let doc = db.pass(&["run", "--now", NOW], &pairs(&env)).await;
    assert_eq!(count(&doc, "sent"), 2, "{doc}");
    let note = doc["channels"][0]["note"].as_str().unwrap_or_default().to_string();
    assert!(note.contains("monthly quota of 2 reached"), "{doc}");
    // Another pass this month sends nothing more.
    let doc = db.pass(&["send", "--now", NOW], &pairs(&env)).await;
    assert_eq!(count(&doc, "sent"), 0, "{doc}");
    assert_eq!(sink.count(), 2);
    let status = db.pass(&["status"], &pairs(&env)).await;
    assert_eq!(status["channels"][0]["monthly_quota"]["used"], 2, "{status}");
    assert_eq!(status["channels"][0]["monthly_quota"]["limit"], 2, "{status}");
}

both!(
    a_message_for_a_connection_that_is_not_configured_waits_with_the_reason,
    unknown_connection_body
);
async fn unknown_connection_body(db: &TestDb) {
    three_contacts(db).await;
    db.exec("UPDATE contacts SET whatsapp_connection = 'toko' WHERE id = 1").await;
    invoice(db, 1, "INV-1", "2025-11-20").await;
    let doc = db.pass(&["run", "--now", NOW], &LOG_CHANNELS).await;
    assert_eq!(count(&doc, "sent"), 0, "{doc}");
    let line = doc["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channel"] == "whatsapp toko")
        .cloned()
        .unwrap_or_default();
    assert_eq!(line["waiting"], 1, "{doc}");
    assert!(
        line["note"].as_str().unwrap_or_default().contains("no WhatsApp connection 'toko'"),
        "{doc}"
    );
    assert_eq!(db.text("SELECT status FROM messages").await.as_deref(), Some("pending"));
}

/// A backend's migration files, in order, with their SQL.
fn migrations(backend: &str) -> Vec<(String, String)> {
    let dir = crate::helpers::project_root().join("migrations").join(backend);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("migrations")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).expect("read migration"))
        })
        .collect()
}

const OLD_ROWS: &str =
    "INSERT INTO contacts (id, name, phone) VALUES (1, 'Budi', '081234567890'); \
     INSERT INTO scheduled_messages (id, contact_id, body, scheduled_at, status) VALUES \
       (1, 1, 'menunggu', '2025-11-18T08:00:00+07:00', 'active'), \
       (2, 1, 'terkirim', '2025-11-10T08:00:00+07:00', 'done'), \
       (3, 1, 'gagal', '2025-11-10T08:00:00+07:00', 'done'), \
       (4, 1, 'batal', '2025-11-10T08:00:00+07:00', 'cancelled'); \
     INSERT INTO messages (kind, subject_id, dedup_key, contact_id, channel, status, \
         provider_message_id, last_error) VALUES \
       ('scheduled', 2, 'scheduled:2:1', 1, 'whatsapp', 'sent', 'SM2', NULL), \
       ('scheduled', 3, 'scheduled:3:1', 1, 'whatsapp', 'failed', NULL, 'invalid number')";

#[tokio::test]
async fn existing_scheduled_rows_are_migrated_to_seed_004s_vocabulary() {
    use sqlx::Connection as _;
    let expected = "1:pending:-|2:sent:SM2|3:failed:invalid number|4:cancelled:-";
    let query = "SELECT CAST(id AS TEXT) || ':' || status || ':' || \
                 COALESCE(message_id, error, '-') AS row FROM scheduled_messages ORDER BY id";
    // SQLite: the old schema, old rows, then the migration.
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite:{}?mode=rwc", dir.path().join("old.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("sqlite");
    for (name, sql) in migrations("sqlite") {
        if name.starts_with("20251203") {
            sqlx::raw_sql(OLD_ROWS).execute(&mut conn).await.expect("old rows");
        }
        sqlx::raw_sql(&sql).execute(&mut conn).await.unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let rows: Vec<String> = sqlx::query_scalar(query).fetch_all(&mut conn).await.expect("rows");
    assert_eq!(rows.join("|"), expected);

    // PostgreSQL, the same.
    let admin = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
    let Ok(mut admin_conn) = sqlx::PgConnection::connect(&admin).await else {
        assert!(!crate::helpers::under_ci(), "PostgreSQL is unreachable under CI");
        return;
    };
    let name = format!("reminderctl_m_{:016x}", rand::random::<u64>());
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin_conn).await.expect("db");
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    let result = async {
        let mut conn = sqlx::PgConnection::connect(&format!("{base}/{name}")).await.expect("pg");
        for (file, sql) in migrations("postgres") {
            if file.starts_with("20251203") {
                sqlx::raw_sql(OLD_ROWS).execute(&mut conn).await.expect("old rows");
            }
            sqlx::raw_sql(&sql).execute(&mut conn).await.unwrap_or_else(|e| panic!("{file}: {e}"));
        }
        let rows: Vec<String> = sqlx::query_scalar(query).fetch_all(&mut conn).await.expect("rows");
        conn.close().await.ok();
        rows.join("|")
    }
    .await;
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin_conn)
        .await;
    assert_eq!(result, expected);
}

both!(media_caption_and_channel_edited_after_queueing_are_what_goes_out, media_edit_body);
async fn media_edit_body(db: &TestDb) {
    three_contacts(db).await;
    // `--database-url` wins over DATABASE_URL (which points nowhere useful here).
    let elsewhere = [("DATABASE_URL", "sqlite:not-this-one.db")];
    let add = |body: &'static str, extra: &'static [&'static str]| {
        let mut args = vec![
            "schedule",
            "add",
            "--contact",
            "1",
            "--at",
            "2025-11-17 08:00",
            "--body",
            body,
            "--database-url",
            &db.url,
            "--json",
            "--now",
            "2025-11-17T07:00:00+07:00",
        ];
        args.extend_from_slice(extra);
        args
    };
    let out = db
        .run(
            &add("", &["--media-url", "https://example.com/a.jpg", "--caption", "Brosur"]),
            &elsewhere,
        )
        .await;
    assert!(out.status.success(), "{}", text(&out));
    let out = db.run(&add("Halo {{ name }}", &[]), &elsewhere).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(db.int("SELECT count(*) FROM scheduled_messages").await, 2);
    assert!(!db.dir.path().join("not-this-one.db").exists());
    let row =
        db.text("SELECT media_url || ' ' || caption FROM scheduled_messages WHERE id = 1").await;
    assert_eq!(row.as_deref(), Some("https://example.com/a.jpg Brosur"));

    // Queued while no provider is configured, then edited before it went out.
    db.pass(&["generate", "--now", NOW], &[]).await;
    assert_eq!(db.int("SELECT count(*) FROM messages WHERE status = 'pending'").await, 2);
    let edit = db
        .run(
            &[
                "schedule",
                "edit",
                "1",
                "--media-url",
                "https://example.com/b.pdf",
                "--caption",
                "Brosur baru",
                "--json",
                "--now",
                "2025-11-17T07:30:00+07:00",
            ],
            &[],
        )
        .await;
    assert!(edit.status.success(), "{}", text(&edit));
    let edit = db
        .run(
            &[
                "schedule",
                "edit",
                "2",
                "--channel",
                "telegram",
                "--json",
                "--now",
                "2025-11-17T07:30:00+07:00",
            ],
            &[],
        )
        .await;
    assert!(edit.status.success(), "{}", text(&edit));

    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(crate::helpers::TWILIO_PATH))
        .respond_with(twilio_ok("SM1"))
        .mount(&server)
        .await;
    let mut env = crate::helpers::twilio_env(&server.uri());
    env.push(("TELEGRAM_PROVIDER", "log".to_string()));
    let doc = db.pass(&["send", "--now", NOW], &pairs(&env)).await;
    let requests = server.received_requests().await.unwrap_or_default();
    assert_eq!(requests.len(), 1, "{doc}");
    let form = String::from_utf8_lossy(&requests[0].body).to_string();
    assert!(form.contains("MediaUrl=https%3A%2F%2Fexample.com%2Fb.pdf"), "{form}");
    assert!(form.contains("Brosur+baru"), "{form}");
    assert!(!form.contains("a.jpg"), "{form}");
    // The second went on the channel it was moved to.
    let sent_on =
        db.text("SELECT channel FROM messages WHERE subject_id = 2 AND status = 'sent'").await;
    assert_eq!(sent_on.as_deref(), Some("telegram"), "{doc}");
}

both!(a_named_connection_keeps_its_own_quota_and_rate, connection_limits_body);
async fn connection_limits_body(db: &TestDb) {
    three_contacts(db).await;
    db.exec("UPDATE contacts SET whatsapp_connection = 'gudang'").await;
    for id in 1..=3 {
        invoice(db, id, &format!("INV-{id}"), "2025-11-20").await;
    }
    let default = Sink::start(Duration::ZERO).await;
    let gudang = Sink::start(Duration::ZERO).await;
    let mut env = two_numbers(&default.uri(), &gudang.uri());
    env.push(("WHATSAPP_GUDANG_MONTHLY_QUOTA", "1".to_string()));
    let doc = db.pass(&["run", "--now", NOW], &pairs(&env)).await;
    assert_eq!(count(&doc, "sent"), 1, "{doc}");
    assert_eq!((default.count(), gudang.count()), (0, 1));
    let status = db.pass(&["status"], &pairs(&env)).await;
    let route = status["channels"]
        .as_array()
        .and_then(|c| c.iter().find(|r| r["connection"] == "gudang"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(route["monthly_quota"]["limit"], 1, "{route}");
    assert_eq!(route["monthly_quota"]["used"], 1, "{route}");
    assert_eq!(route["due"], 2, "{route}");

    // Without the quota, its own rate (one a minute) holds it; the default's stays unlimited.
    env.retain(|(k, _)| !k.starts_with("WHATSAPP_GUDANG_MONTHLY") && *k != "WHATSAPP_GUDANG_RATE");
    env.push(("WHATSAPP_GUDANG_RATE", "1/min".to_string()));
    env.push(("REMINDER_PASS_SECONDS", "2".to_string()));
    let doc = db.pass(&["send", "--now", NOW], &pairs(&env)).await;
    assert_eq!(count(&doc, "sent"), 1, "{doc}");
    assert_eq!(gudang.count(), 2);
    let status = db.pass(&["status"], &pairs(&env)).await;
    let route = status["channels"]
        .as_array()
        .and_then(|c| c.iter().find(|r| r["connection"] == "gudang"))
        .cloned()
        .unwrap_or_default();
    assert!(route["rate_limit_wait_seconds"].as_f64().unwrap_or(0.0) > 30.0, "{route}");
}
