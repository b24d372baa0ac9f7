//! `upcoming`: the forecast of the next days, checked against what real passes then send.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::both;
use crate::helpers::{contact, details, invoice, TestDb, LOG_CHANNELS};

const NOW: &str = "2025-11-17T09:00:00+07:00";

async fn week_of_work(db: &TestDb) {
    contact(db, "Budi", "081234567890", "whatsapp").await;
    contact(db, "Siti", "081234567891", "email").await;
    // T-3 today, T-1 on the 19th, T+3 on the 23rd.
    invoice(db, 1, "INV-1", "2025-11-20").await;
    // A visit on the 22nd: its reminder comes on the 20th, two days before.
    db.exec(
        "INSERT INTO vehicles (contact_id, plate_no, next_visit_date) \
         VALUES (2, 'B 1234 ABC', '2025-11-22')",
    )
    .await;
    db.exec(
        "INSERT INTO scheduled_messages (contact_id, body, scheduled_at, recurrence) VALUES \
         (1, 'Harian untuk {{ name }}', '2025-11-01T08:00:00+07:00', 'daily'), \
         (2, 'Sekali saja', '2025-11-19T14:00:00+07:00', 'none')",
    )
    .await;
}

/// `(kind, stage, channel, contact)` of each message, per day.
fn plan(day: &Value) -> BTreeSet<String> {
    day["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(day["queued"].as_array().into_iter().flatten())
        .map(|m| format!("{} {} {} {}", m["kind"], m["stage"], m["channel"], m["contact_id"]))
        .collect()
}

both!(upcoming_lists_each_day_and_real_passes_then_send_exactly_that, forecast_body);
async fn forecast_body(db: &TestDb) {
    week_of_work(db).await;
    let forecast = db.pass(&["upcoming", "--days", "7", "--now", NOW], &LOG_CHANNELS).await;
    assert_eq!(db.int("SELECT count(*) FROM messages").await, 0, "upcoming writes nothing");
    assert!(db.text("SELECT next_run_at FROM scheduled_messages WHERE id = 1").await.is_none());
    let days = forecast["days"].as_array().cloned().unwrap_or_default();
    assert_eq!(days.len(), 7, "{forecast}");
    assert_eq!(days[0]["date"], "2025-11-17");
    assert_eq!(days[6]["date"], "2025-11-23");

    let first = &days[0]["messages"];
    let dunning = first
        .as_array()
        .and_then(|m| m.iter().find(|m| m["kind"] == "dunning"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(dunning["stage"], "T-3", "{forecast}");
    assert_eq!(dunning["recipient"], "6281234567890");
    assert_eq!(dunning["invoice_number"], "INV-1");
    assert_eq!(dunning["days_left"], 3);
    assert!(dunning["body"].as_str().unwrap_or_default().contains("INV-1"), "{dunning}");
    let daily = days[3]["messages"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["kind"] == "scheduled"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(daily["body"], "Harian untuk Budi", "rendered as it goes out: {daily}");

    // Each day at 23:00, a real pass: what it sends is what the forecast said for that day.
    for (i, day) in days.iter().enumerate() {
        let date = day["date"].as_str().unwrap_or_default();
        let doc =
            db.pass(&["run", "--now", &format!("{date}T23:00:00+07:00")], &LOG_CHANNELS).await;
        let sent: BTreeSet<String> = details(&doc)
            .iter()
            .filter(|d| d["status"] == "sent")
            .map(|m| format!("{} {} {} {}", m["kind"], m["stage"], m["channel"], m["contact_id"]))
            .collect();
        assert_eq!(sent, plan(day), "day {i} ({date}): forecast {day}\npass {doc}");
    }
    // The week had: T-3, T-1, T+3, the visit, seven dailies and the one-off.
    assert_eq!(db.int("SELECT count(*) FROM messages WHERE status = 'sent'").await, 12);
}

both!(upcoming_shows_what_is_queued_and_why_a_message_would_not_go, forecast_queued_body);
async fn forecast_queued_body(db: &TestDb) {
    contact(db, "Budi", "081234567890", "whatsapp").await;
    contact(db, "Siti", "081234567891", "whatsapp").await;
    invoice(db, 1, "INV-1", "2025-11-20").await;
    invoice(db, 2, "INV-2", "2025-11-21").await;
    db.pass(&["generate", "--now", NOW], &LOG_CHANNELS).await;
    db.exec("UPDATE contacts SET opted_out_at = '2025-11-17T01:00:00Z' WHERE name = 'Siti'").await;
    // Telegram is not configured here: a message for it would wait, and says why.
    db.exec("UPDATE contacts SET channels = 'telegram' WHERE name = 'Budi'").await;
    invoice(db, 1, "INV-3", "2025-11-24").await;
    let env = [("WHATSAPP_PROVIDER", "log"), ("MAIL_MAILER", "log")];
    let forecast = db.pass(&["upcoming", "--days", "2", "--now", NOW], &env).await;
    let today = &forecast["days"][0];
    let queued = today["queued"].as_array().cloned().unwrap_or_default();
    assert_eq!(queued.len(), 2, "the T-3 of INV-1 and the T-3 of INV-2: {forecast}");
    let inv2 = queued.iter().find(|m| m["invoice_number"] == "INV-2").cloned().unwrap_or_default();
    assert_eq!(inv2["status"], "would be skipped", "{inv2}");
    assert_eq!(inv2["error"], "contact opted out");
    let new = today["messages"].as_array().cloned().unwrap_or_default();
    let inv3 = new.iter().find(|m| m["invoice_number"] == "INV-3").cloned().unwrap_or_default();
    assert_eq!((inv3["stage"].as_str(), inv3["channel"].as_str()), (Some("T-7"), Some("telegram")));
    assert_eq!(inv3["status"], "would wait", "{inv3}");
    assert!(inv3["error"].as_str().unwrap_or_default().contains("TELEGRAM_BOT_TOKEN"), "{inv3}");
    assert_eq!(db.int("SELECT count(*) FROM messages").await, 2, "still only what generate wrote");

    // The human forecast: one heading per day, each message with who, what and the text.
    let out = db.run(&["upcoming", "--days", "2", "--now", NOW], &env).await;
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("2025-11-17 (Mon): 3 message(s)"), "{text}");
    assert!(text.contains("2025-11-18 (Tue)"), "{text}");
    assert!(text.contains("Budi · INV-3 · Rp 150.000 · 2025-11-24, in 7 day(s)"), "{text}");

    let out = db.run(&["upcoming", "--days", "0"], &env).await;
    assert_eq!(out.status.code(), Some(2), "--days 0 is a usage error");
}
