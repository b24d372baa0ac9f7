//! SPEC §6's guarantees, each held by a test that fails when the guarantee breaks: enough
//! messages and passes that they really overlap, pacing measured where the provider sees it, a
//! stop requested while claims are held, and a pass killed mid-request.

use std::time::Duration;

use serde_json::Value;

use crate::both;
use crate::helpers::{
    contact, count, invoice, many_due, pairs, signal, sink_env, statuses, Sink, TestDb, T3_NOW,
};

both!(six_overlapping_passes_send_each_of_four_hundred_reminders_once, overlap_body);
async fn overlap_body(db: &TestDb) {
    many_due(db, 400).await;
    db.pass(&["generate", "--now", T3_NOW], &[]).await;
    let sink = Sink::start(Duration::from_millis(2)).await;
    let env = sink_env(&sink, &[]);
    let env = pairs(&env);
    let passes: Vec<_> =
        (0..6).map(|_| db.command(&["send", "--json", "--now", T3_NOW], &env).output()).collect();
    let mut sent = 0;
    for out in futures::future::join_all(passes).await {
        let out = out.expect("pass ran");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let doc: Value = serde_json::from_slice(&out.stdout).expect("json");
        sent += count(&doc, "sent");
    }
    let per = sink.per_recipient();
    assert_eq!(sink.count(), 400, "each reminder reached the provider once");
    assert_eq!(per.len(), 400);
    assert!(per.values().all(|n| *n == 1));
    assert_eq!(sent, 400);
    assert_eq!(statuses(db).await, "sent=400");
}

both!(two_passes_on_one_database_keep_the_shared_rate_between_any_two_sends, pacing_body);
async fn pacing_body(db: &TestDb) {
    many_due(db, 30).await;
    db.pass(&["generate", "--now", T3_NOW], &[]).await;
    let sink = Sink::start(Duration::ZERO).await;
    // 5 a second for a 2-second budget: at most 11 sends, 200 ms apart wherever they come from.
    let env = sink_env(&sink, &[("REMINDER_WHATSAPP_RATE", "5/s"), ("REMINDER_PASS_SECONDS", "2")]);
    let env = pairs(&env);
    let passes: Vec<_> =
        (0..2).map(|_| db.command(&["send", "--json", "--now", T3_NOW], &env).output()).collect();
    for out in futures::future::join_all(passes).await {
        let out = out.expect("pass ran");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let mut times = sink.times();
    times.sort();
    assert!((8..=11).contains(&times.len()), "{} sends in 2 s at 5/s", times.len());
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    // No stretch of time holds more sends than the rate allows: the k sends after any one come
    // at least k × 200 ms after it, less a little scheduling noise (a pass's first request,
    // which also opens its connection, may leave a few ms after its slot). A burst fails this.
    for i in 0..times.len() {
        for (k, later) in times.iter().enumerate().skip(i + 1) {
            let span = *later - times[i];
            let allowed = Duration::from_millis(200 * (k - i) as u64 - 60);
            assert!(span >= allowed, "{} sends within {span:?}: {gaps:?}", k - i + 1);
        }
    }
    assert_eq!(
        db.int("SELECT count(*) FROM messages WHERE status = 'pending'").await,
        30 - times.len() as i64
    );
}

both!(a_contact_who_opts_out_after_generation_gets_nothing, opted_out_body);
async fn opted_out_body(db: &TestDb) {
    contact(db, "Budi", "081234567890", "whatsapp").await;
    invoice(db, 1, "INV-1", "2025-11-20").await;
    db.pass(&["generate", "--now", T3_NOW], &[]).await;
    db.exec("UPDATE contacts SET opted_out_at = '2025-11-17T08:00:00+07:00'").await;
    let sink = Sink::start(Duration::ZERO).await;
    let doc = db.pass(&["send", "--now", T3_NOW], &pairs(&sink_env(&sink, &[]))).await;
    assert_eq!((count(&doc, "sent"), count(&doc, "skipped")), (0, 1), "{doc}");
    assert_eq!(sink.count(), 0);
    assert_eq!(
        db.text("SELECT last_error FROM messages").await.as_deref(),
        Some("contact opted out")
    );
}

both!(sigterm_mid_pass_gives_the_claimed_messages_back_unspent, sigterm_body);
async fn sigterm_body(db: &TestDb) {
    many_due(db, 30).await;
    db.pass(&["generate", "--now", T3_NOW], &[]).await;
    let sink = Sink::start(Duration::from_millis(300)).await;
    let env = sink_env(&sink, &[("REMINDER_CONCURRENCY", "2")]);
    let mut child = db.command(&["send", "--now", T3_NOW], &pairs(&env)).spawn().expect("spawn");
    sink.wait_for(4, Duration::from_secs(20)).await;
    let at_signal = sink.count();
    signal(&child, "TERM");
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("the pass ends within seconds of SIGTERM")
        .expect("wait");
    assert!(status.success(), "SIGTERM ends the pass cleanly: {status:?}");
    // What was in flight finishes; nothing new starts.
    assert!(sink.count() <= at_signal + 2, "{} sends after SIGTERM at {at_signal}", sink.count());
    assert_eq!(db.int("SELECT count(*) FROM messages WHERE status = 'sending'").await, 0);
    let given_back =
        db.int("SELECT count(*) FROM messages WHERE status = 'pending' AND attempts = 0").await;
    assert_eq!(given_back, 30 - sink.count() as i64, "{}", statuses(db).await);
    // The next pass sends the rest, and nobody gets a second message.
    let sink_env = sink_env(&sink, &[]);
    db.pass(&["send", "--now", T3_NOW], &pairs(&sink_env)).await;
    assert_eq!(sink.count(), 30);
    assert!(sink.per_recipient().values().all(|n| *n == 1));
    assert_eq!(statuses(db).await, "sent=30");
}

both!(a_message_held_by_passes_that_died_is_failed_not_sent_again, outcome_unknown_body);
async fn outcome_unknown_body(db: &TestDb) {
    contact(db, "Budi", "081234567890", "whatsapp").await;
    invoice(db, 1, "INV-1", "2025-11-20").await;
    db.pass(&["generate", "--now", T3_NOW], &[]).await;
    // The provider never answers in time, and each pass is killed with the request in flight:
    // three passes die holding the message (REMINDER_MAX_ATTEMPTS is 3).
    let sink = Sink::start(Duration::from_secs(60)).await;
    let env = sink_env(&sink, &[("REMINDER_HTTP_TIMEOUT", "1")]);
    for died in 1..=3 {
        let mut child =
            db.command(&["send", "--now", T3_NOW], &pairs(&env)).spawn().expect("spawn");
        sink.wait_for(died, Duration::from_secs(20)).await;
        child.kill().await.expect("kill -9");
        // The lease (the request timeout × (2 + 4 per delivery slot)) ends on the real clock.
        tokio::time::sleep(Duration::from_millis(6300)).await;
    }
    let doc = db.pass(&["send", "--now", T3_NOW], &pairs(&env)).await;
    assert_eq!(count(&doc, "failed"), 1, "{doc}");
    assert_eq!(sink.count(), 3, "not sent a fourth time");
    let error = db.text("SELECT last_error FROM messages").await.unwrap_or_default();
    assert!(error.starts_with("outcome unknown: 3 passes stopped"), "{error}");
}

both!(a_pass_that_wakes_after_its_lease_ended_sends_nothing_more, lease_short_body);
async fn lease_short_body(db: &TestDb) {
    many_due(db, 4).await;
    db.pass(&["generate", "--now", T3_NOW], &[]).await;
    // One send at a time under a 6 s lease (the 1 s request timeout × (2 + 4 per slot)). Pass A
    // is frozen (SIGSTOP: a suspended VM, a swap storm) with its first request in flight until
    // its lease has ended and pass B has taken all four over. When A wakes, nothing it still
    // holds may go out: B owns it now.
    let sink = Sink::start(Duration::from_millis(500)).await;
    let env = sink_env(&sink, &[("REMINDER_CONCURRENCY", "1"), ("REMINDER_HTTP_TIMEOUT", "1")]);
    let a = db.command(&["send", "--json", "--now", T3_NOW], &pairs(&env)).spawn().expect("a");
    sink.wait_for(1, Duration::from_secs(20)).await;
    signal(&a, "STOP");
    tokio::time::sleep(Duration::from_millis(6500)).await;
    let b = db.command(&["send", "--json", "--now", T3_NOW], &pairs(&env)).spawn().expect("b");
    sink.wait_for(2, Duration::from_secs(20)).await;
    signal(&a, "CONT");
    let (a, b) = tokio::join!(a.wait_with_output(), b.wait_with_output());
    let (a, b) = (a.expect("a"), b.expect("b"));
    assert!(a.status.success() && b.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    // B sent all four; A's first request was the crash-window duplicate, and nothing more.
    assert_eq!(sink.count(), 5, "{}", String::from_utf8_lossy(&a.stdout));
    assert_eq!(sink.per_recipient().values().filter(|n| **n == 2).count(), 1);
    assert_eq!(statuses(db).await, "sent=4");
}

both!(a_fallback_row_goes_out_in_the_same_pass, fallback_body);
async fn fallback_body(db: &TestDb) {
    contact(db, "Tanpa Nomor", "", "whatsapp,email").await;
    invoice(db, 1, "INV-1", "2025-11-20").await;
    let env = [("WHATSAPP_PROVIDER", "log"), ("MAIL_MAILER", "log")];
    let doc = db.pass(&["run", "--now", T3_NOW], &env).await;
    assert_eq!((count(&doc, "sent"), count(&doc, "skipped")), (1, 1), "{doc}");
    assert_eq!(
        db.text("SELECT status FROM messages WHERE channel = 'email'").await.as_deref(),
        Some("sent")
    );
}

both!(a_pass_with_a_future_now_does_not_hold_back_real_passes, future_now_body);
async fn future_now_body(db: &TestDb) {
    // Scheduled messages: unlike dunning stages, they are still worth sending at any later
    // time, so both a preview of next year and a pass on today's real clock may send them.
    many_due(db, 6).await;
    db.exec(
        "INSERT INTO scheduled_messages (contact_id, body, scheduled_at) \
         SELECT id, 'Halo', '2025-11-17T08:00:00+07:00' FROM contacts",
    )
    .await;
    db.exec("DELETE FROM invoices").await;
    db.pass(&["generate", "--now", T3_NOW], &[]).await;
    let sink = Sink::start(Duration::ZERO).await;
    let env = sink_env(&sink, &[("REMINDER_WHATSAPP_RATE", "2/s"), ("REMINDER_PASS_SECONDS", "1")]);
    // A preview of next year sends what its budget allows…
    db.pass(&["send", "--now", "2026-11-17T09:00:00+07:00"], &pairs(&env)).await;
    let after_future = sink.count();
    assert!((1..=3).contains(&after_future), "{after_future}");
    // …and a pass on the real clock right after is not held back by it: the rate limiter and
    // the leases run on the real clock, never on --now.
    let doc = db.pass(&["send"], &pairs(&env)).await;
    assert!(count(&doc, "sent") >= 1, "{doc}");
    assert!(sink.per_recipient().values().all(|n| *n == 1));
}
