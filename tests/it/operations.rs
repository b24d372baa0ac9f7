//! Operations: every pass recorded in `passes` and shown by `status`, the heartbeat ping, the
//! `run --every` loop, `retry` and `prune`. All through the binary, on both backends.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::both;
use crate::helpers::{
    contact, invoice, json_of, many_due, pairs, signal, sink_env, terminate, twilio_env, Sink,
    TestDb, LOG_CHANNELS, T3_NOW, TWILIO_PATH,
};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn status_json(db: &TestDb, env: &[(&str, &str)]) -> Value {
    let out = db.run(&["status", "--json"], env).await;
    assert!(out.status.success(), "{out:?}");
    json_of(&out)
}

/// A heartbeat monitor on loopback that counts its pings, as Healthchecks.io would.
async fn monitor() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET")).respond_with(ResponseTemplate::new(200)).mount(&server).await;
    server
}

async fn pings(server: &MockServer) -> Vec<String> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| r.url.path().to_string())
        .collect()
}

both!(every_pass_is_recorded_and_status_shows_the_last, recorded_body);
async fn recorded_body(db: &TestDb) {
    let env = LOG_CHANNELS;
    // Nothing ran yet: status says so, and warns.
    let doc = status_json(db, &env).await;
    assert_eq!(doc["last_pass"], Value::Null, "{doc}");
    assert_eq!(doc["stale"], true);
    let out = db.run(&["status"], &env).await;
    assert!(stdout(&out).contains("none recorded yet"), "{}", stdout(&out));
    assert!(stdout(&out).contains("WARNING: no pass finished"), "{}", stdout(&out));

    contact(db, "Budi", "081234567890", "whatsapp").await;
    invoice(db, 1, "INV-1", "2025-11-20").await;
    // A dry run is not a pass.
    db.pass(&["run", "--dry-run", "--now", T3_NOW], &env).await;
    assert_eq!(db.int("SELECT count(*) FROM passes").await, 0);

    db.pass(&["run", "--now", T3_NOW], &env).await;
    let doc = status_json(db, &env).await;
    let last = &doc["last_pass"];
    assert_eq!(last["command"], "run", "{doc}");
    assert!(last["finished_at"].is_string(), "{doc}");
    assert_eq!(last["counts"]["generated"], 1);
    assert_eq!(last["counts"]["sent"], 1);
    assert_eq!(last["error"], Value::Null);
    assert_eq!(last["pid"].as_i64().map(|p| p > 0), Some(true));
    assert!(last["now"].as_str().is_some_and(|n| n.starts_with("2025-11-17T02:00:00")), "{doc}");
    assert_eq!(doc["stale"], false, "{doc}");
    let out = db.run(&["status"], &env).await;
    let text = stdout(&out);
    assert!(text.contains("last pass: `run` on "), "{text}");
    assert!(!text.contains("WARNING"), "{text}");

    // Stale after a second: the warning names the setting.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stale = [LOG_CHANNELS.as_slice(), &[("REMINDER_STALE_AFTER", "1s")]].concat();
    assert_eq!(status_json(db, &stale).await["stale"], true);
    let out = db.run(&["status"], &stale).await;
    assert!(stdout(&out).contains("REMINDER_STALE_AFTER"), "{}", stdout(&out));

    // A pass that fails is recorded with its error, and is not the last good one.
    db.exec("ALTER TABLE invoices RENAME TO invoices_gone").await;
    let out = db.run(&["run", "--now", T3_NOW], &env).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    db.exec("ALTER TABLE invoices_gone RENAME TO invoices").await;
    let doc = status_json(db, &env).await;
    assert!(doc["last_pass"]["error"].as_str().is_some_and(|e| e.contains("generation failed")));
    assert!(doc["last_pass"]["finished_at"].is_string());
    assert_eq!(doc["last_good_pass"]["counts"]["sent"], 1, "{doc}");
    assert_ne!(doc["last_pass"]["id"], doc["last_good_pass"]["id"]);
    let out = db.run(&["status"], &env).await;
    assert!(stdout(&out).contains("last good pass: "), "{}", stdout(&out));
}

both!(the_heartbeat_hears_each_pass_and_fail_after_a_failed_one, heartbeat_body);
async fn heartbeat_body(db: &TestDb) {
    let hc = monitor().await;
    let url = format!("{}/ping/5f3a9c1e-token", hc.uri());
    let env = [LOG_CHANNELS.as_slice(), &[("REMINDER_HEARTBEAT_URL", url.as_str())]].concat();
    db.pass(&["run"], &env).await;
    db.pass(&["send"], &env).await;
    assert_eq!(pings(&hc).await, ["/ping/5f3a9c1e-token", "/ping/5f3a9c1e-token"]);
    // Dry runs are not passes.
    db.pass(&["run", "--dry-run"], &env).await;
    assert_eq!(pings(&hc).await.len(), 2);

    db.exec("ALTER TABLE invoices RENAME TO invoices_gone").await;
    let out = db.run(&["run"], &env).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(pings(&hc).await.last().map(String::as_str), Some("/ping/5f3a9c1e-token/fail"));
    db.exec("ALTER TABLE invoices_gone RENAME TO invoices").await;

    // A monitor that errors or hangs costs a warning and a short wait, never the pass, and
    // its URL (a credential) is never printed.
    let broken = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(500).set_delay(Duration::from_secs(30)))
        .mount(&broken)
        .await;
    let url = format!("{}/ping/5f3a9c1e-token", broken.uri());
    let env = [LOG_CHANNELS.as_slice(), &[("REMINDER_HEARTBEAT_URL", url.as_str())]].concat();
    let began = Instant::now();
    let out = db.run(&["run"], &env).await;
    assert!(out.status.success(), "{out:?}");
    assert!(began.elapsed() < Duration::from_secs(20), "the ping held the pass");
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(all.contains("the heartbeat at 127.0.0.1 was not reached"), "{all}");
    assert!(!all.contains("5f3a9c1e-token"), "{all}");

    // A monitor that redirects is not followed: the request to the new address would carry the
    // URL (as its Referer) there. The warning names where it points, by origin only.
    let elsewhere = monitor().await;
    let moved = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(302)
                .insert_header("location", format!("{}/ping/5f3a9c1e-token", elsewhere.uri())),
        )
        .mount(&moved)
        .await;
    let url = format!("{}/ping/5f3a9c1e-token", moved.uri());
    let env = [LOG_CHANNELS.as_slice(), &[("REMINDER_HEARTBEAT_URL", url.as_str())]].concat();
    let out = db.run(&["run"], &env).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(pings(&moved).await.len(), 1);
    assert!(pings(&elsewhere).await.is_empty(), "the redirect was followed");
    let all = format!("{}{}", stdout(&out), stderr(&out));
    let warning = format!(
        "the heartbeat at 127.0.0.1 answered HTTP 302, a redirect to {}, which is not followed",
        elsewhere.uri()
    );
    assert!(all.contains(&warning), "{all}");
    assert!(all.contains("REMINDER_HEARTBEAT_URL"), "{all}");
    assert!(!all.contains("5f3a9c1e-token"), "{all}");

    // A URL that is not one stops the command before anything runs, without echoing it.
    let env =
        [LOG_CHANNELS.as_slice(), &[("REMINDER_HEARTBEAT_URL", "hc-ping 5f3a9c1e-token")]].concat();
    let out = db.run(&["run"], &env).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("REMINDER_HEARTBEAT_URL"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("5f3a9c1e-token"));
}

both!(run_every_makes_one_pass_per_interval_until_sigterm, every_body);
async fn every_body(db: &TestDb) {
    many_due(db, 5).await;
    let sink = Sink::start(Duration::ZERO).await;
    let env = twilio_env(&sink.uri());
    let mut child = db
        .command(&["run", "--every", "1s", "--now", T3_NOW], &pairs(&env))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let until = Instant::now() + Duration::from_secs(30);
    while db.int("SELECT count(*) FROM passes WHERE finished_at IS NOT NULL").await < 3 {
        assert!(Instant::now() < until, "fewer than 3 passes in 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = tokio::time::timeout(Duration::from_secs(15), terminate(&mut child))
        .await
        .expect("the loop did not stop within 15 s of SIGTERM");
    assert_eq!(out.0.code(), Some(0), "{}", out.1);
    assert!(out.1.contains("pass 1: generated 5, sent 5"), "{}", out.1);
    assert!(out.1.contains("pass 3: generated 0, sent 0"), "{}", out.1);
    assert!(out.1.contains("stopped after"), "{}", out.1);
    // Several passes, each message once.
    assert_eq!(sink.count(), 5);
    assert!(sink.per_recipient().values().all(|n| *n == 1));
    assert_eq!(db.int("SELECT count(*) FROM passes WHERE error IS NOT NULL").await, 0);
    // The loop's business clock moved on from --now: later passes evaluated later instants.
    let distinct = db.int("SELECT count(DISTINCT business_now) FROM passes").await;
    assert!(distinct >= 3, "{distinct}");

    // Usage mistakes stop it at once.
    let out = db.run(&["run", "--every", "soon"], &pairs(&env)).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--every: 'soon' is not a duration"), "{}", stderr(&out));
    let out = db.run(&["run", "--every", "1m", "--dry-run"], &pairs(&env)).await;
    assert_eq!(out.status.code(), Some(2));
}

both!(sigterm_during_a_pass_finishes_the_sends_in_flight_and_gives_claims_back, sigterm_body);
async fn sigterm_body(db: &TestDb) {
    many_due(db, 12).await;
    let sink = Sink::start(Duration::from_millis(400)).await;
    let env = sink_env(&sink, &[("REMINDER_CONCURRENCY", "2")]);
    let mut child = db
        .command(&["run", "--every", "1m", "--now", T3_NOW], &pairs(&env))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    sink.wait_for(1, Duration::from_secs(30)).await;
    signal(&child, "TERM");
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("no exit within 15 s of SIGTERM")
        .expect("wait");
    assert_eq!(status.code(), Some(0));
    let sent = db.int("SELECT count(*) FROM messages WHERE status = 'sent'").await;
    assert!((1..12).contains(&sent), "sent {sent}");
    // Every request the sink answered is recorded as sent: none is left in between.
    assert_eq!(db.int("SELECT count(*) FROM messages WHERE status = 'sending'").await, 0);
    assert_eq!(sink.count() as i64, sent);
    // The rest go out with the next pass, each once.
    db.pass(&["send", "--now", "2025-11-17T09:05:00+07:00"], &pairs(&env)).await;
    assert_eq!(sink.count(), 12);
    assert!(sink.per_recipient().values().all(|n| *n == 1));
}

both!(the_idle_check_reads_the_open_rows_not_the_history, idle_check_body);
/// Every tick asks whether anything is open before it opens a lane. With a long sent history and
/// nothing open, that question is answered from the partial indexes, never by reading the table.
async fn idle_check_body(db: &TestDb) {
    db.exec(
        "INSERT INTO messages (kind, dedup_key, channel, status) \
         SELECT 'test', 'sent-' || n, 'whatsapp', 'sent' FROM \
         (WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 5000) \
          SELECT n FROM s) x",
    )
    .await;
    db.exec("ANALYZE").await;
    let plan = db.plan(reminderctl::store::OPEN_MESSAGES).await;
    let reads_table = plan.lines().any(|l| {
        let l = l.trim_start_matches([' ', '-', '>']);
        l.starts_with("Seq Scan on messages") || l == "SCAN messages"
    });
    assert!(!reads_table, "the idle check reads all of messages:\n{plan}");
    assert_eq!(db.int(reminderctl::store::OPEN_MESSAGES).await, 0);
}

/// A database that cannot be reached fails that pass, not the loop: the next interval retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_every_outlives_a_database_it_cannot_open() {
    let db = TestDb::sqlite().await;
    let hc = monitor().await;
    let dir = db.dir.path().join("not-yet");
    let url = format!("sqlite:{}/later.db", dir.display());
    let beat = format!("{}/ping/abc", hc.uri());
    let env =
        [LOG_CHANNELS.as_slice(), &[("DATABASE_URL", &url), ("REMINDER_HEARTBEAT_URL", &beat)]]
            .concat();
    let mut child = db
        .command(&["run", "--every", "1s"], &env)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let until = Instant::now() + Duration::from_secs(20);
    while !pings(&hc).await.iter().any(|p| p == "/ping/abc/fail") {
        assert!(Instant::now() < until, "no failed pass reported");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::create_dir_all(&dir).expect("mkdir");
    while !pings(&hc).await.iter().any(|p| p == "/ping/abc") {
        assert!(Instant::now() < until, "no pass succeeded after the directory appeared");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, err) = terminate(&mut child).await;
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.contains("pass 1 could not start"), "{err}");
    assert!(err.contains("trying again in 1s"), "{err}");
}

/// The loop names its database when it starts and each time a pass cannot reach it, and never
/// with the URL's password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_every_never_prints_the_database_password() {
    let db = TestDb::sqlite().await;
    let url = "postgres://app:hunter2-secret@127.0.0.1:1/app";
    let env = [LOG_CHANNELS.as_slice(), &[("DATABASE_URL", url), ("LOG_LEVEL", "info")]].concat();
    let mut child = db
        .command(&["run", "--every", "1s"], &env)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    // Two failed passes: the first and a retry.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, err) = terminate(&mut child).await;
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.contains("run every 1s (postgres database app on 127.0.0.1:1)"), "{err}");
    assert!(err.contains("pass 2 could not start"), "{err}");
    assert!(!err.contains("hunter2-secret"), "{err}");
}

/// PostgreSQL drops the loop's connections between passes: the next pass reconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_every_reconnects_after_its_postgres_connections_are_killed() {
    let Some(db) = TestDb::postgres().await else { return };
    let env = LOG_CHANNELS;
    let mut child = db
        .command(&["run", "--every", "1s"], &env)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let finished = "SELECT count(*) FROM passes WHERE finished_at IS NOT NULL AND error IS NULL";
    let until = Instant::now() + Duration::from_secs(30);
    while db.int(finished).await < 1 {
        assert!(Instant::now() < until, "no first pass");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    db.exec(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .await;
    let before = db.int(finished).await;
    while db.int(finished).await < before + 2 {
        assert!(Instant::now() < until, "no good pass after the connections were killed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    signal(&child, "TERM");
    let status = child.wait().await.expect("wait");
    assert_eq!(status.code(), Some(0));
}

/// A Twilio that refuses every number: each message fails permanently.
async fn refusing_twilio() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(TWILIO_PATH))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "code": 21211, "message": "The 'To' number is not a valid phone number.", "status": 400
        })))
        .mount(&server)
        .await;
    server
}

both!(retry_puts_failed_messages_back_with_fresh_attempts, retry_body);
async fn retry_body(db: &TestDb) {
    let refusing = refusing_twilio().await;
    let failing = twilio_env(&refusing.uri());
    for (name, phone) in
        [("Budi", "081200000001"), ("Sari", "081200000002"), ("Andi", "081200000003")]
    {
        contact(db, name, phone, "whatsapp").await;
    }
    invoice(db, 1, "INV-1", "2025-11-20").await;
    invoice(db, 2, "INV-2", "2025-11-20").await;
    db.pass(&["run", "--now", T3_NOW], &pairs(&failing)).await;
    // Andi's fails a day later.
    invoice(db, 3, "INV-3", "2025-11-21").await;
    db.pass(&["run", "--now", "2025-11-18T09:00:00+07:00"], &pairs(&failing)).await;
    assert_eq!(db.int("SELECT count(*) FROM messages WHERE status = 'failed'").await, 3);
    let id = |n: &str| {
        format!("SELECT m.id FROM messages m JOIN invoices i ON i.id = m.subject_id WHERE i.number = '{n}'")
    };
    let (budi, sari, andi) =
        (db.int(&id("INV-1")).await, db.int(&id("INV-2")).await, db.int(&id("INV-3")).await);

    let later = "2025-11-18T10:00:00+07:00";
    let out = db.run(&["retry", &budi.to_string(), "--json", "--now", later], &[]).await;
    assert!(out.status.success(), "{out:?}");
    let doc = json_of(&out);
    assert_eq!(doc["retried"][0]["id"], budi, "{doc}");
    assert_eq!(doc["not_retried"], json!([]));
    let row = format!("SELECT status || ' ' || CAST(attempts AS TEXT) || ' ' || COALESCE(last_error, '-') FROM messages WHERE id = {budi}");
    assert_eq!(db.text(&row).await.as_deref(), Some("pending 0 -"));
    let requeued = format!(
        "SELECT count(*) FROM delivery_attempts WHERE message_id = {budi} AND outcome = 'requeued'"
    );
    assert_eq!(db.int(&requeued).await, 1);
    assert_eq!(
        db.int(&format!("SELECT count(*) FROM messages WHERE id = {sari} AND status = \'failed\'"))
            .await,
        1
    );

    // The provider works again: the next pass sends it, once.
    let sink = Sink::start(Duration::ZERO).await;
    let working = twilio_env(&sink.uri());
    let doc = db.pass(&["send", "--now", "2025-11-18T10:01:00+07:00"], &pairs(&working)).await;
    assert_eq!(doc["sent"], 1, "{doc}");
    assert_eq!(sink.count(), 1);

    // What is not failed, or not there, is refused by name, with exit 1.
    let out = db.run(&["retry", &budi.to_string(), "99999", "--now", later], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains(&format!("message {budi} is sent, not failed")), "{text}");
    assert!(text.contains("there is no message 99999"), "{text}");
    assert!(stderr(&out).contains("2 of the named messages could not be put back"));

    // --failed-since takes the failures from then on: Andi's, not Sari's.
    let out =
        db.run(&["retry", "--failed-since", "2025-11-18", "--json", "--now", later], &[]).await;
    assert!(out.status.success(), "{out:?}");
    let ids: Vec<i64> = json_of(&out)["retried"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["id"].as_i64())
        .collect();
    assert_eq!(ids, [andi]);
    let doc = db.pass(&["send", "--now", "2025-11-18T10:02:00+07:00"], &pairs(&working)).await;
    assert_eq!(doc["sent"], 1, "{doc}");
    assert_eq!(sink.count(), 2);
    assert!(sink.per_recipient().values().all(|n| *n == 1));

    // Arguments are checked.
    let out = db.run(&["retry"], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    let out = db.run(&["retry", "--failed-since", "kemarin"], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--failed-since"), "{}", stderr(&out));
}

both!(retry_does_not_put_back_what_a_fallback_delivered, retry_fallback_body);
async fn retry_fallback_body(db: &TestDb) {
    let refusing = refusing_twilio().await;
    let mut env = twilio_env(&refusing.uri());
    env.push(("TELEGRAM_PROVIDER", "log".to_string()));
    contact(db, "Budi", "081200000001", "whatsapp,telegram").await;
    invoice(db, 1, "INV-1", "2025-11-20").await;
    db.pass(&["run", "--now", T3_NOW], &pairs(&env)).await;
    let failed =
        db.int("SELECT id FROM messages WHERE channel = 'whatsapp' AND status = 'failed'").await;
    assert_eq!(
        db.int("SELECT count(*) FROM messages WHERE channel = 'telegram' AND status = 'sent'")
            .await,
        1
    );
    let out = db.run(&["retry", &failed.to_string()], &pairs(&env)).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stdout(&out).contains("its reminder was sent on telegram"), "{}", stdout(&out));
    assert_eq!(
        db.int(&format!(
            "SELECT count(*) FROM messages WHERE id = {failed} AND status = \'failed\'"
        ))
        .await,
        1
    );
}

both!(prune_deletes_only_what_can_never_come_again, prune_body);
async fn prune_body(db: &TestDb) {
    // Telegram is not configured: contact 2's reminder stays pending.
    let env = [("WHATSAPP_PROVIDER", "log"), ("MAIL_MAILER", "log")];
    contact(db, "Budi", "081200000001", "whatsapp").await;
    contact(db, "Sari", "081200000002", "telegram").await;
    invoice(db, 1, "INV-1", "2025-11-01").await;
    invoice(db, 2, "INV-2", "2025-10-01").await;
    db.exec("INSERT INTO vehicles (contact_id, plate_no, next_visit_date) VALUES (1, 'B 1234 XY', '2025-11-12')").await;
    db.exec(
        "INSERT INTO scheduled_messages (contact_id, body, scheduled_at) \
         VALUES (1, 'Sekali saja', '2025-11-10T09:00:00+07:00')",
    )
    .await;
    db.exec(
        "INSERT INTO scheduled_messages (contact_id, body, scheduled_at, recurrence) \
         VALUES (1, 'Tiap minggu', '2025-11-11T08:00:00+07:00', 'weekly')",
    )
    .await;
    db.pass(&["generate", "--now", "2025-10-04T09:00:00+07:00"], &env).await; // INV-2 T+3, pending
    for at in
        ["2025-11-10T09:00:00+07:00", "2025-11-11T09:00:00+07:00", "2025-11-13T09:00:00+07:00"]
    {
        db.pass(&["run", "--now", at], &env).await;
    }
    // T+9 and T+12 of INV-1, the maintenance reminder, the one-off and one weekly occurrence.
    assert_eq!(db.int("SELECT count(*) FROM messages WHERE status = 'sent'").await, 5);
    assert_eq!(db.int("SELECT count(*) FROM messages WHERE status = 'pending'").await, 1);
    db.exec("INSERT INTO passes (command, host, pid, started_at, finished_at) VALUES ('run', 'old', 1, '2000-01-01T00:00:00.000Z', '2000-01-01T00:00:01.000Z')").await;
    let passes = db.int("SELECT count(*) FROM passes").await;

    // Two days after T+12 its stage is still current until T+15: the invoice's reminders stay.
    let at = "2025-11-15T09:00:00+07:00";
    let out =
        db.run(&["prune", "--older-than", "1", "--dry-run", "--json", "--now", at], &env).await;
    assert!(out.status.success(), "{out:?}");
    let dry = json_of(&out);
    assert_eq!(db.int("SELECT count(*) FROM messages").await, 6, "a dry run deletes nothing");
    let out = db.run(&["prune", "--older-than", "1", "--json", "--now", at], &env).await;
    let doc = json_of(&out);
    assert_eq!(
        doc,
        json!({"dry_run": false, "before": doc["before"], "messages": 3, "attempts": 3, "passes": 1})
    );
    assert_eq!(dry["messages"], 3);
    assert_eq!(db.int("SELECT count(*) FROM messages WHERE kind = 'dunning'").await, 3);
    assert_eq!(db.int("SELECT count(*) FROM passes").await, passes - 1);
    // Nothing pruned comes back.
    let rerun = db.pass(&["run", "--now", at], &env).await;
    assert_eq!(rerun["generated"], 0, "{rerun}");

    // After T+15 the invoice's sent reminders go; the pending one stays whatever its age.
    let at = "2025-11-17T09:00:00+07:00";
    let out = db.run(&["prune", "--older-than", "1", "--now", at], &env).await;
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains("deleted 2 finished messages"), "{}", stdout(&out));
    assert_eq!(db.int("SELECT count(*) FROM messages").await, 1);
    assert_eq!(db.int("SELECT count(*) FROM messages WHERE status = 'pending'").await, 1);
    assert_eq!(db.int("SELECT count(*) FROM delivery_attempts").await, 0);
    let rerun = db.pass(&["run", "--now", at], &env).await;
    assert_eq!(rerun["generated"], 0, "{rerun}");
    // Younger than the cut: kept even when it can never come again.
    let out = db.run(&["prune", "--older-than", "30", "--json", "--now", at], &env).await;
    assert_eq!(json_of(&out)["messages"], 0);
}

/// A large send draws a progress bar on a terminal, and nothing of it where cron or a pipe reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_send_shows_progress_on_a_terminal_only() {
    if !crate::helpers::have_tool("script", "the progress bar on a terminal") {
        return;
    }
    let db = TestDb::sqlite().await;
    many_due(&db, 450).await;
    let sink = Sink::start(Duration::from_millis(10)).await;
    let env = sink_env(&sink, &[("REMINDER_CONCURRENCY", "2"), ("LOG_LEVEL", "warn")]);
    db.pass(&["generate", "--now", T3_NOW], &pairs(&env)).await;
    // 250 of them through a pipe: no bar.
    db.exec("UPDATE messages SET next_attempt_at = '2030-01-01T00:00:00.000Z' WHERE id > 250")
        .await;
    let out = db.run(&["send", "--now", "2025-11-17T09:01:00+07:00"], &pairs(&env)).await;
    assert!(out.status.success(), "{:?}", out.status);
    assert!(!stderr(&out).contains("sending ["), "a bar in a pipe");
    assert_eq!(sink.count(), 250);
    db.exec("UPDATE messages SET next_attempt_at = '2025-11-17T02:00:00.000Z' WHERE id > 250")
        .await;

    // The other 200 on a terminal (`script` gives the binary one).
    let binary = env!("CARGO_BIN_EXE_reminderctl");
    let mut cmd = tokio::process::Command::new("script");
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &db.url)
        .env("REMINDER_SEND_WINDOW", "00:00-24:00")
        .env("NO_COLOR", "1")
        .env("TERM", "xterm")
        .current_dir(db.dir.path())
        .args(["-qec", &format!("{binary} send --now 2025-11-17T09:02:00+07:00"), "/dev/null"])
        .kill_on_drop(true);
    for (k, v) in &env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.expect("script");
    assert!(out.status.success(), "{:?}", out.status);
    let shown = String::from_utf8_lossy(&out.stdout);
    let head: String = shown.chars().take(600).collect();
    assert!(shown.contains("sending ["), "no bar: {head:?}");
    assert_eq!(sink.count(), 450);
    assert!(sink.per_recipient().values().all(|n| *n == 1));
}

both!(a_loop_beside_cron_passes_sends_each_reminder_once, loop_and_cron_body);
async fn loop_and_cron_body(db: &TestDb) {
    many_due(db, 40).await;
    let sink = Sink::start(Duration::from_millis(20)).await;
    let env = sink_env(&sink, &[("REMINDER_CONCURRENCY", "4")]);
    let mut daemon = db
        .command(&["run", "--every", "1s", "--now", T3_NOW], &pairs(&env))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    // Cron's passes, overlapping the loop's and each other.
    let crons: Vec<_> =
        (0..3).map(|_| db.command(&["run", "--now", T3_NOW], &pairs(&env)).output()).collect();
    for out in futures::future::join_all(crons).await {
        let out = out.expect("cron pass");
        assert!(out.status.success(), "{}", stderr(&out));
    }
    sink.wait_for(40, Duration::from_secs(60)).await;
    let until = Instant::now() + Duration::from_secs(30);
    while crate::helpers::statuses(db).await != "sent=40" {
        assert!(Instant::now() < until, "{}", crate::helpers::statuses(db).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    signal(&daemon, "TERM");
    assert_eq!(daemon.wait().await.expect("wait").code(), Some(0));
    assert_eq!(sink.count(), 40);
    assert!(sink.per_recipient().values().all(|n| *n == 1), "{:?}", sink.per_recipient());
}
