//! Generation rules end to end through the binary: stages, windows, catch-up, cancellation,
//! maintenance and scheduled messages.

use serde_json::Value;

use crate::both;
use crate::helpers::{contact, count, details, invoice, TestDb, LOG_CHANNELS};

fn stages_with_status(doc: &Value, status: &str) -> Vec<String> {
    details(doc)
        .iter()
        .filter(|d| d["status"] == status)
        .map(|d| d["stage"].as_str().unwrap_or_default().to_string())
        .collect()
}

async fn run_at(db: &TestDb, now: &str) -> Value {
    db.pass(&["run", "--now", now], &LOG_CHANNELS).await
}

both!(first_run_after_seed_sends_every_kind, first_run_after_seed_sends_every_kind_body);
async fn first_run_after_seed_sends_every_kind_body(db: &TestDb) {
    let now = "2025-11-18T09:00:00+07:00";
    db.pass(&["seed", "--now", now], &[]).await;
    let again = db.pass(&["seed", "--now", now], &[]).await;
    assert_eq!(again["seeded"]["invoices"], 0, "a second seed adds nothing");
    assert_eq!(db.int("SELECT count(*) FROM invoices").await, 10);

    let doc = run_at(db, now).await;
    for kind in ["dunning", "maintenance", "scheduled"] {
        assert!(
            details(&doc).iter().any(|d| d["kind"] == kind && d["status"] == "sent"),
            "no {kind} message was sent: {doc}"
        );
    }
    for channel in ["whatsapp", "telegram", "email"] {
        assert!(details(&doc).iter().any(|d| d["channel"] == channel && d["status"] == "sent"));
    }
    assert_eq!(count(&doc, "sent"), count(&doc, "generated"));
    assert_eq!(count(&doc, "failed"), 0);

    let rerun = run_at(db, now).await;
    assert_eq!((count(&rerun, "generated"), count(&rerun, "sent")), (0, 0), "{rerun}");
}

both!(late_invoice_gets_only_the_latest_stage, late_invoice_gets_only_the_latest_stage_body);
async fn late_invoice_gets_only_the_latest_stage_body(db: &TestDb) {
    contact(db, "Budi", "081234567890", "whatsapp").await;
    invoice(db, 1, "INV-1", "2025-11-20").await;

    // First seen two days before the due date: T-3 is current, T-7 is long gone.
    let doc = run_at(db, "2025-11-18T09:00:00+07:00").await;
    assert_eq!(stages_with_status(&doc, "sent"), ["T-3"]);
    assert_eq!(count(&run_at(db, "2025-11-18T10:00:00+07:00").await, "generated"), 0);

    let doc = run_at(db, "2025-11-19T09:00:00+07:00").await;
    assert_eq!(stages_with_status(&doc, "sent"), ["T-1"]);

    // The due day itself: nothing says "will be due", and no follow-up yet.
    let doc = run_at(db, "2025-11-20T09:00:00+07:00").await;
    assert_eq!(count(&doc, "generated"), 0);
    assert_eq!(db.int("SELECT count(*) FROM messages").await, 2);
}

both!(local_midnight_not_utc_decides_the_day, local_midnight_not_utc_decides_the_day_body);
async fn local_midnight_not_utc_decides_the_day_body(db: &TestDb) {
    contact(db, "Budi", "081234567890", "whatsapp").await;
    invoice(db, 1, "INV-1", "2025-11-25").await;
    // 23:59 in Jakarta on the 17th is T-8: nothing yet, though UTC says the same day.
    let doc = run_at(db, "2025-11-17T16:59:00Z").await;
    assert_eq!(count(&doc, "generated"), 0);
    // 06:30 in Jakarta on the 18th is T-7, while UTC still says the 17th.
    let doc = run_at(db, "2025-11-17T23:30:00Z").await;
    assert_eq!(stages_with_status(&doc, "sent"), ["T-7"]);
}

both!(missed_cron_days_catch_up_and_never_send_a_stale_stage, missed_days_body);
async fn missed_days_body(db: &TestDb) {
    contact(db, "Budi", "081234567890", "whatsapp").await;
    invoice(db, 1, "INV-1", "2025-11-20").await;
    let window = [("REMINDER_SEND_WINDOW", "08:00-20:00")];
    let env: Vec<_> = LOG_CHANNELS.iter().copied().chain(window).collect();

    // T-7 at 21:00: generated, but the send window is closed.
    let doc = db.pass(&["run", "--now", "2025-11-13T21:00:00+07:00"], &env).await;
    assert_eq!(count(&doc, "generated"), 1);
    assert_eq!(count(&doc, "sent"), 0);
    assert!(doc["send_window"].as_str().unwrap_or_default().contains("08:00-20:00"));

    // Cron was down for four days. T-3 is current now: T-7 is cancelled, T-3 goes out.
    let doc = db.pass(&["run", "--now", "2025-11-17T09:00:00+07:00"], &env).await;
    assert_eq!(stages_with_status(&doc, "sent"), ["T-3"]);
    assert_eq!(stages_with_status(&doc, "cancelled"), ["T-7"]);
    let reason = db.text("SELECT last_error FROM messages WHERE stage = 'T-7'").await;
    assert!(reason.unwrap_or_default().contains("stage T-7 is over"));
}

both!(overdue_follow_ups_come_every_three_days_four_times, overdue_follow_ups_body);
async fn overdue_follow_ups_body(db: &TestDb) {
    contact(db, "Budi", "081234567890", "whatsapp").await;
    invoice(db, 1, "INV-1", "2025-11-01").await;
    let mut sent = Vec::new();
    for day in 1..=20 {
        let doc = run_at(db, &format!("2025-11-{day:02}T09:00:00+07:00")).await;
        sent.extend(stages_with_status(&doc, "sent"));
    }
    assert_eq!(sent, ["T+3", "T+6", "T+9", "T+12"]);
    let body = db.text("SELECT body FROM messages WHERE stage = 'T+3'").await.unwrap_or_default();
    assert!(body.contains("telah jatuh tempo pada 1 November 2025"), "{body}");
    assert!(body.contains("terlambat 3 hari"), "{body}");
}

both!(paid_invoices_get_nothing_more, paid_invoice_body);
async fn paid_invoice_body(db: &TestDb) {
    contact(db, "Budi", "081234567890", "whatsapp").await;
    for n in 1..=3 {
        invoice(db, 1, &format!("INV-{n}"), "2025-11-20").await;
    }
    let doc = db.pass(&["generate", "--now", "2025-11-17T09:00:00+07:00"], &[]).await;
    assert_eq!(count(&doc, "generated"), 3);

    // Paid after its reminder was queued: `send` re-checks just before sending.
    db.exec(
        "UPDATE invoices SET status = 'paid', paid_at = '2025-11-17T10:00:00+07:00' WHERE id = 1",
    )
    .await;
    let doc = db.pass(&["send", "--now", "2025-11-17T10:01:00+07:00"], &LOG_CHANNELS).await;
    assert_eq!((count(&doc, "cancelled"), count(&doc, "sent")), (1, 2), "{doc}");
    let reason = db.text("SELECT last_error FROM messages WHERE subject_id = 1").await;
    assert_eq!(reason.as_deref(), Some("invoice is paid"));

    // Queued at T-1, then cancelled by the business: the next pass cancels it before delivery.
    db.pass(&["generate", "--now", "2025-11-19T09:00:00+07:00"], &[]).await;
    db.exec("UPDATE invoices SET status = 'cancelled' WHERE id = 2").await;
    let doc = run_at(db, "2025-11-19T09:05:00+07:00").await;
    assert_eq!((count(&doc, "cancelled"), count(&doc, "sent")), (1, 1), "{doc}");
    let reason =
        db.text("SELECT last_error FROM messages WHERE subject_id = 2 AND stage = 'T-1'").await;
    assert_eq!(reason.as_deref(), Some("invoice is cancelled"));
    // And a paid invoice generates nothing later.
    let doc = run_at(db, "2025-11-23T09:00:00+07:00").await;
    assert_eq!(count(&doc, "generated"), 1, "only INV-3 gets T+3: {doc}");
}

both!(maintenance_reminds_once_per_visit_in_the_three_day_window, maintenance_body);
async fn maintenance_body(db: &TestDb) {
    contact(db, "Budi Santoso", "08551234567", "whatsapp").await;
    db.exec(
        "INSERT INTO vehicles (contact_id, plate_no, next_visit_date) VALUES \
             (1, 'B 1234 ABC', '2026-03-01'), (1, 'B 5 FAR', '2026-03-02'); \
         INSERT INTO vehicles (contact_id, plate_no, last_visit_date) VALUES (1, 'L 9 END', '2025-10-31')",
    )
    .await;
    let env = [("WHATSAPP_PROVIDER", "log"), ("REMINDER_SERVICE_PHONE", "087740659525")];
    // 2026-02-27: Mar 1 is 2 days away, Mar 2 is 3 (too far); Oct 31 + 4 months is Feb 28.
    let doc = db.pass(&["run", "--now", "2026-02-27T07:00:00+07:00"], &env).await;
    assert_eq!(count(&doc, "sent"), 2, "{doc}");
    // Seed 002's run-now summary, from the same document: each vehicle, customer and text.
    let line = details(&doc).into_iter().find(|d| d["plate_no"] == "L 9 END").unwrap_or_default();
    assert_eq!(line["contact_name"], "Budi Santoso", "{line}");
    assert_eq!(line["recipient"], "628551234567");
    assert_eq!((line["date"].as_str(), line["days_left"].as_i64()), (Some("2026-02-28"), Some(1)));
    assert_eq!(line["status"], "sent");
    assert!(line["provider_message_id"].as_str().is_some_and(|id| !id.is_empty()), "{line}");
    assert!(line["body"].as_str().unwrap_or_default().contains("L 9 END"), "{line}");
    let body = db.text("SELECT body FROM messages WHERE subject_id = 3").await.unwrap_or_default();
    assert_eq!(
        body,
        "Bapak Budi Santoso untuk nomor kendaraan L 9 END sebentar lagi tiba saat pemeliharaan \
         rutin pada tanggal 28-02-2026, daftarkan segera melalui nomor pelayanan kami 087740659525"
    );
    let recipient = db.text("SELECT recipient FROM messages WHERE subject_id = 3").await;
    assert_eq!(recipient.as_deref(), Some("628551234567"));
    let doc = db.pass(&["run", "--now", "2026-02-28T07:00:00+07:00"], &env).await;
    assert_eq!(count(&doc, "generated"), 1, "only B 5 FAR enters the window: {doc}");
}

async fn next_run_epoch(db: &TestDb, id: i64) -> i64 {
    let sql = if db.is_postgres() {
        format!("SELECT CAST(extract(epoch FROM next_run_at) AS BIGINT) FROM scheduled_messages WHERE id = {id}")
    } else {
        format!("SELECT unixepoch(next_run_at) FROM scheduled_messages WHERE id = {id}")
    };
    db.int(&sql).await
}

both!(monthly_message_keeps_its_day_and_skips_missed_runs, monthly_body);
async fn monthly_body(db: &TestDb) {
    contact(db, "Budi", "081234567890", "whatsapp").await;
    db.exec(
        "INSERT INTO scheduled_messages (contact_id, body, scheduled_at, recurrence) \
         VALUES (1, 'Laporan bulanan', '2025-01-31T09:00:00+07:00', 'monthly')",
    )
    .await;
    let doc = run_at(db, "2025-01-31T09:05:00+07:00").await;
    assert_eq!(count(&doc, "sent"), 1);
    // Feb 28, 09:00 Jakarta.
    assert_eq!(next_run_epoch(db, 1).await, 1_740_708_000);

    // Cron was off from February to mid-April: one message, not three.
    let doc = run_at(db, "2025-04-15T12:00:00+07:00").await;
    assert_eq!(count(&doc, "sent"), 1, "{doc}");
    // Apr 30, 09:00 Jakarta: the day of month comes back to the clamp of 31.
    assert_eq!(next_run_epoch(db, 1).await, 1_745_978_400);
    let body = db.text("SELECT body FROM messages WHERE id = 2").await;
    assert_eq!(body.as_deref(), Some("Laporan bulanan"));
}

both!(one_off_scheduled_message_is_sent_once_and_done, one_off_body);
async fn one_off_body(db: &TestDb) {
    contact(db, "Budi", "081234567890", "whatsapp").await;
    db.exec(
        "INSERT INTO scheduled_messages (contact_id, body, scheduled_at) \
         VALUES (1, 'Sekali saja', '2025-11-18T09:00:00+07:00')",
    )
    .await;
    assert_eq!(count(&run_at(db, "2025-11-18T08:59:00+07:00").await, "generated"), 0);
    assert_eq!(count(&run_at(db, "2025-11-18T09:00:00+07:00").await, "sent"), 1);
    assert_eq!(count(&run_at(db, "2025-11-19T09:00:00+07:00").await, "generated"), 0);
    assert_eq!(db.text("SELECT status FROM scheduled_messages").await.as_deref(), Some("sent"));
}

both!(opted_out_and_missing_contacts_are_reported_not_fatal, bad_rows_body);
async fn bad_rows_body(db: &TestDb) {
    contact(db, "Budi", "081234567890", "whatsapp").await;
    contact(db, "Ani", "081234567891", "whatsapp").await;
    contact(db, "Landline", "0211234567", "whatsapp").await;
    db.exec("UPDATE contacts SET opted_out_at = '2025-11-01T00:00:00Z' WHERE id = 2").await;
    invoice(db, 1, "INV-OK", "2025-11-20").await;
    invoice(db, 2, "INV-OPTOUT", "2025-11-20").await;
    invoice(db, 999, "INV-ORPHAN", "2025-11-20").await;
    invoice(db, 3, "INV-LANDLINE", "2025-11-20").await;
    let doc = run_at(db, "2025-11-17T09:00:00+07:00").await;
    assert_eq!(count(&doc, "sent"), 1, "{doc}");
    assert_eq!(count(&doc, "skipped"), 1);
    assert_eq!(count(&doc, "failed"), 2);
    let orphan = db.text("SELECT last_error FROM messages WHERE subject_id = 3").await;
    assert_eq!(orphan.as_deref(), Some("contact 999 not found"));
    let landline = db.text("SELECT last_error FROM messages WHERE subject_id = 4").await;
    assert!(landline.unwrap_or_default().contains("0211234567"), "the reason names the number");
    let optout = db.text("SELECT status FROM messages WHERE subject_id = 2").await;
    assert_eq!(optout.as_deref(), Some("skipped"));

    // `status` shows the latest failures with their reasons.
    let status = db.pass(&["status", "--now", "2025-11-17T09:05:00+07:00"], &LOG_CHANNELS).await;
    let errors: Vec<String> = status["failures"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|f| f["error"].as_str().map(str::to_string))
        .collect();
    assert!(errors.iter().any(|e| e == "contact 999 not found"), "{status}");
    assert!(errors.iter().any(|e| e.contains("0211234567")), "{status}");
    assert!(errors.iter().any(|e| e == "contact opted out"), "{status}");
}

both!(dry_run_writes_and_sends_nothing, dry_run_body);
async fn dry_run_body(db: &TestDb) {
    contact(db, "Budi", "081234567890", "whatsapp").await;
    invoice(db, 1, "INV-1", "2025-11-20").await;
    db.exec(
        "INSERT INTO scheduled_messages (contact_id, body, scheduled_at, recurrence) \
         VALUES (1, 'Harian', '2025-11-01T09:00:00+07:00', 'daily')",
    )
    .await;
    let doc =
        db.pass(&["run", "--dry-run", "--now", "2025-11-17T09:00:00+07:00"], &LOG_CHANNELS).await;
    assert_eq!(count(&doc, "generated"), 2, "{doc}");
    assert_eq!(count(&doc, "sent"), 0);
    assert_eq!(db.int("SELECT count(*) FROM messages").await, 0);
    assert!(db.text("SELECT next_run_at FROM scheduled_messages").await.is_none());

    // Each would-be message says who, what, and the exact text it would carry.
    let all = details(&doc);
    let dunning = all.iter().find(|d| d["kind"] == "dunning").expect("a dunning row");
    assert_eq!(dunning["status"], "would send", "{dunning}");
    assert_eq!(dunning["stage"], "T-3");
    assert_eq!(dunning["recipient"], "6281234567890");
    assert_eq!(dunning["contact_name"], "Budi");
    assert_eq!(dunning["invoice_number"], "INV-1");
    assert_eq!(dunning["amount"], 150_000);
    assert_eq!(dunning["date"], "2025-11-20");
    assert_eq!(
        (dunning["days_left"].as_i64(), dunning["days_overdue"].as_i64()),
        (Some(3), Some(0))
    );
    let body = dunning["body"].as_str().unwrap_or_default();
    assert!(body.contains("INV-1") && body.contains("Rp 150.000"), "{body}");
    let scheduled = all.iter().find(|d| d["kind"] == "scheduled").expect("a scheduled row");
    assert_eq!(scheduled["body"], "Harian", "{scheduled}");
    assert_eq!(scheduled["scheduled_message_id"], 1);

    // The human summary shows the same, one message per line.
    let text =
        db.run(&["run", "--dry-run", "--now", "2025-11-17T09:00:00+07:00"], &LOG_CHANNELS).await;
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("Budi · INV-1 · Rp 150.000 · 2025-11-20, in 3 day(s)"), "{text}");
}

both!(dry_run_shows_what_a_queued_message_would_become, dry_run_queued_body);
async fn dry_run_queued_body(db: &TestDb) {
    contact(db, "Budi", "081234567890", "whatsapp").await;
    contact(db, "Siti", "081234567891", "whatsapp").await;
    invoice(db, 1, "INV-1", "2025-11-20").await;
    invoice(db, 2, "INV-2", "2025-11-20").await;
    db.pass(&["generate", "--now", "2025-11-17T09:00:00+07:00"], &LOG_CHANNELS).await;
    // After queueing, one invoice is paid and one contact opts out.
    db.exec("UPDATE invoices SET status = 'paid' WHERE number = 'INV-1'").await;
    db.exec("UPDATE contacts SET opted_out_at = '2025-11-17T01:00:00Z' WHERE name = 'Siti'").await;
    let doc =
        db.pass(&["send", "--dry-run", "--now", "2025-11-17T09:05:00+07:00"], &LOG_CHANNELS).await;
    let all = details(&doc);
    let paid = all.iter().find(|d| d["invoice_number"] == "INV-1").expect("INV-1");
    assert_eq!(paid["status"], "would be cancelled", "{paid}");
    assert!(paid["id"].as_i64().is_some());
    let opted = all.iter().find(|d| d["invoice_number"] == "INV-2").expect("INV-2");
    assert_eq!(opted["status"], "would be skipped", "{opted}");
    assert_eq!(opted["contact_name"], "Siti");
    assert_eq!(db.int("SELECT count(*) FROM messages WHERE status = 'pending'").await, 2);
}
