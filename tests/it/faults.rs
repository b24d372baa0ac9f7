//! Faults as real deployments meet them, reproduced for real: a disk that fills up mid-pass, a
//! second process holding SQLite's write lock, a PostgreSQL connection terminated and a
//! database dropped mid-pass, `kill -9` of the binary, a host clock twenty minutes ahead. Each
//! counts what the provider received: every reminder once, duplicates within the bound, nothing
//! left `sending` or without a reason.

use std::io::Write as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use sqlx::Connection as _;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

use crate::both;
use crate::helpers::{
    have_tool, json_of, many_due, pairs, sink_env, statuses, twilio_env, under_ci, Sink, TestDb,
    T3_NOW,
};

/// Every recipient got exactly one message.
fn each_once(sink: &Sink, n: usize) {
    let per = sink.per_recipient();
    assert_eq!(per.len(), n, "recipients reached");
    let twice: Vec<_> = per.iter().filter(|(_, c)| **c > 1).collect();
    assert!(twice.is_empty(), "sent more than once: {twice:?}");
}

/// A process (Python's sqlite3) that holds SQLite's write lock for a while when told to. It is
/// started before the pass, so that taking the lock mid-pass costs no interpreter start-up: on
/// a busy machine that start-up could outlast the whole pass.
struct LockHolder {
    child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl LockHolder {
    /// Starts the holder for `path`, to hold the lock `seconds` once taken; returns when it is
    /// ready.
    async fn ready(path: &str, seconds: f64) -> Self {
        let script = "import sqlite3, sys, time\n\
                      c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)\n\
                      print('ready', flush=True)\n\
                      sys.stdin.readline()\n\
                      c.execute('BEGIN IMMEDIATE')\n\
                      print('locked', flush=True)\n\
                      time.sleep(float(sys.argv[2]))\n\
                      c.execute('ROLLBACK')\n";
        let mut child = tokio::process::Command::new("python3")
            .args(["-c", script, path, &seconds.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3");
        let stdout = child.stdout.take().expect("stdout");
        let mut holder = Self { child, lines: BufReader::new(stdout).lines() };
        holder.expect("ready").await;
        holder
    }

    async fn expect(&mut self, word: &str) {
        let line = tokio::time::timeout(Duration::from_secs(30), self.lines.next_line()).await;
        assert!(matches!(line, Ok(Ok(Some(ref l))) if l == word), "lock holder: {line:?}");
    }

    /// Takes the write lock; returns once it is held.
    async fn lock(&mut self) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin.write_all(b"go\n").await.expect("tell the lock holder");
        stdin.flush().await.expect("tell the lock holder");
        self.expect("locked").await;
    }

    /// Waits until it has let the lock go and exited.
    async fn wait(&mut self) {
        let _ = self.child.wait().await;
    }
}

/// A new SQLite file whose write lock another process holds, as when a first pass starts while
/// another is creating the file: the open waits for the lock and then migrates. SQLite answers a
/// connection switching such a file to WAL "database is locked" at once, without waiting out
/// the busy timeout, and the pass used to fail with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_a_new_file_waits_for_a_write_lock_another_process_holds() {
    if !have_tool("python3", "the SQLite write-lock test") {
        return;
    }
    let db = TestDb::sqlite().await;
    let path = db.dir.path().join("fresh.db").display().to_string();
    let mut locker = LockHolder::ready(&path, 1.5).await;
    locker.lock().await;
    let url = format!("sqlite:{path}");
    let began = Instant::now();
    let out = db.command(&["status", "--json", "--database-url", &url], &[]).output().await;
    let out = out.expect("ran");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(began.elapsed() >= Duration::from_millis(500), "the lock was not held: {began:?}");
    locker.wait().await;
    let mut store = sqlx::SqliteConnection::connect(&url).await.expect("open the migrated file");
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'messages'",
    )
    .fetch_one(&mut store)
    .await
    .expect("read the schema");
    assert_eq!(tables, 1, "the open did not go on to migrate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_lock_held_past_the_busy_timeout_halts_sending_and_repeats_nothing() {
    if !have_tool("python3", "the SQLite write-lock test") {
        return;
    }
    let db = TestDb::sqlite().await;
    many_due(&db, 60).await;
    db.pass(&["generate", "--now", T3_NOW], &[]).await;
    let sink = Sink::start(Duration::from_millis(20)).await;
    let env = sink_env(&sink, &[("REMINDER_CONCURRENCY", "4")]);
    // Longer than the store's 10 s busy timeout.
    let mut locker = LockHolder::ready(&db.sqlite_path(), 12.0).await;
    let pass = db.command(&["send", "--json", "--now", T3_NOW], &pairs(&env)).output();
    let fault = async {
        sink.wait_for(8, Duration::from_secs(20)).await;
        locker.lock().await;
        let at_lock = sink.count();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // A delivery slot is given up only once its result is stored: with the database locked,
        // at most REMINDER_CONCURRENCY requests start, however many are claimed.
        sink.count() - at_lock
    };
    let (out, during) = tokio::join!(pass, fault);
    assert!(during <= 4, "{during} requests started while no result could be stored");
    let out = out.expect("pass ran");
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let doc = json_of(&out);
    let unrecorded = doc["unrecorded_results"].as_u64().unwrap_or(0);
    assert_eq!(doc["journaled_results"].as_u64(), Some(unrecorded), "{doc}");
    assert!(doc["halted"].as_str().is_some_and(|h| h.contains("locked")), "{doc}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("error: the pass stopped early"), "{stderr}");
    locker.wait().await;

    // Once the lock is gone, the next pass writes what the journal kept before it claims, and
    // sends the rest: nobody gets a reminder twice.
    let doc = db.pass(&["send", "--now", T3_NOW], &pairs(&env)).await;
    assert_eq!(doc["replayed_results"].as_u64(), Some(unrecorded), "{doc}");
    assert_eq!(sink.count(), 60, "{}", statuses(&db).await);
    each_once(&sink, 60);
    assert_eq!(statuses(&db).await, "sent=60");
}

/// The same fault under `send --every`: the pass that meets the lock halts, and a later pass of
/// the same process (whose connections met the failed writes) writes the journal and sends the
/// rest. Nobody gets a reminder twice, and the loop never exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_that_meets_a_held_write_lock_recovers_in_the_same_process() {
    if !have_tool("python3", "the SQLite write-lock test") {
        return;
    }
    let db = TestDb::sqlite().await;
    many_due(&db, 60).await;
    db.pass(&["generate", "--now", T3_NOW], &[]).await;
    let sink = Sink::start(Duration::from_millis(20)).await;
    let env = sink_env(&sink, &[("REMINDER_CONCURRENCY", "4")]);
    let mut locker = LockHolder::ready(&db.sqlite_path(), 12.0).await;
    let mut child = db
        .command(&["send", "--every", "2s", "--now", T3_NOW], &pairs(&env))
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    sink.wait_for(8, Duration::from_secs(20)).await;
    locker.lock().await;
    locker.wait().await;
    sink.wait_for(60, Duration::from_secs(60)).await;
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while statuses(&db).await != "sent=60" {
        assert!(std::time::Instant::now() < until, "{}", statuses(&db).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, err) = crate::helpers::terminate(&mut child).await;
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.contains("stopped early"), "the lock never halted a pass: {err}");
    each_once(&sink, 60);
    assert_eq!(sink.count(), 60);
}

/// A small tmpfs of our own, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Self { dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Fills a file system: writes until it is full.
fn fill(path: &std::path::Path) {
    use std::io::Write as _;
    let Ok(mut f) = std::fs::File::create(path) else { return };
    let block = vec![0u8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    let mut byte = [0u8; 1];
    while f.write_all(&byte).is_ok() {
        byte[0] = 1;
    }
    let _ = f.sync_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_that_fills_up_mid_pass_halts_sending_and_repeats_nothing() {
    let Some(tmpfs) = Tmpfs::mount("16m") else {
        assert!(!under_ci(), "CI runs as root and must be able to mount a tmpfs");
        let _ = writeln!(
            std::io::stderr(),
            "\n*** cannot mount a tmpfs (not root?): SKIPPED the full-disk test ***\n"
        );
        return;
    };
    // The outbox on the small disk; the working directory (and so the journal) elsewhere.
    let db = TestDb::sqlite_in(tmpfs.dir.path()).await;
    many_due(&db, 200).await;
    db.pass(&["generate", "--now", T3_NOW], &[]).await;
    let sink = Sink::start(Duration::from_millis(10)).await;
    let env = sink_env(&sink, &[("REMINDER_CONCURRENCY", "4")]);
    let pass = db.command(&["send", "--json", "--now", T3_NOW], &pairs(&env)).output();
    let filler = tmpfs.dir.path().join("filler");
    let fault = async {
        sink.wait_for(30, Duration::from_secs(20)).await;
        let at_full = sink.count();
        let f = filler.clone();
        tokio::task::spawn_blocking(move || fill(&f)).await.expect("fill");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let _ = std::fs::remove_file(&filler);
        at_full
    };
    let (out, at_full) = tokio::join!(pass, fault);
    let out = out.expect("pass ran");
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let doc = json_of(&out);
    let unrecorded = doc["unrecorded_results"].as_u64().unwrap_or(0);
    assert!(unrecorded > 0, "{doc}");
    assert_eq!(doc["journaled_results"].as_u64(), Some(unrecorded), "{doc}");
    assert!(sink.count() <= at_full + 200, "sanity");

    let doc = db.pass(&["send", "--now", T3_NOW], &pairs(&env)).await;
    assert_eq!(doc["replayed_results"].as_u64(), Some(unrecorded), "{doc}");
    assert_eq!(sink.count(), 200, "{}", statuses(&db).await);
    each_once(&sink, 200);
    assert_eq!(statuses(&db).await, "sent=200");
    drop(db);
}

/// The pass's own connections, in `pg_stat_activity`.
const OURS: &str = "FROM pg_stat_activity \
     WHERE datname = current_database() AND application_name = 'reminderctl'";
/// Terminates the connections that follow it; counts them.
const KILL: &str = "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))";

/// Takes a lock (`lock`, in a transaction of its own), waits up to 5 s for a statement of the
/// pass to wait behind it (`and` narrows which), terminates what waits there, and lets the lock
/// go. Returns how many connections it terminated.
async fn kill_what_waits_behind(db: &TestDb, lock: &str, and: &str) -> i64 {
    let mut blocker = sqlx::PgConnection::connect(&db.url).await.expect("connect");
    sqlx::raw_sql(&format!("BEGIN; {lock}")).execute(&mut blocker).await.expect("lock");
    let waiting = format!("{OURS} AND wait_event_type = 'Lock' {and}");
    let since = Instant::now();
    while db.int(&format!("SELECT count(*) {waiting}")).await == 0
        && since.elapsed() < Duration::from_secs(5)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let killed = db.int(&format!("{KILL} {waiting}")).await;
    sqlx::raw_sql("COMMIT").execute(&mut blocker).await.expect("unlock");
    killed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_postgres_connection_costs_no_reminder() {
    let Some(db) = TestDb::postgres().await else { return };
    many_due(&db, 200).await;
    db.pass(&["generate", "--now", T3_NOW], &[]).await;
    let sink = Sink::start(Duration::from_millis(10)).await;
    let env = sink_env(&sink, &[("REMINDER_CONCURRENCY", "4")]);
    let pass = db.command(&["send", "--json", "--now", T3_NOW], &pairs(&env)).output();
    // First every connection the pass has open is killed, between or during statements. Then
    // a write of results is caught in the middle: it waits behind a lock, and its connection is
    // killed there.
    let fault = async {
        sink.wait_for(30, Duration::from_secs(20)).await;
        let killed = db.int(&format!("{KILL} {OURS}")).await;
        sink.wait_for(120, Duration::from_secs(20)).await;
        let lock = "LOCK TABLE delivery_attempts IN EXCLUSIVE MODE";
        let killed_writes = kill_what_waits_behind(&db, lock, "").await;
        (killed, killed_writes)
    };
    let (out, (killed, killed_writes)) = tokio::join!(pass, fault);
    let out = out.expect("pass ran");
    assert!(killed >= 1 && killed_writes >= 1, "terminated {killed}, then {killed_writes} writes");
    // The same pass goes on over new connections: it neither halts nor needs the next one.
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let doc = json_of(&out);
    assert!(doc["halted"].is_null(), "{}", doc["halted"]);
    assert_eq!(doc["sent"].as_u64(), Some(200), "{}", doc["channels"]);
    assert_eq!(doc["unrecorded_results"].as_u64(), Some(0), "{}", doc["channels"]);
    assert_eq!(sink.count(), 200, "{}", statuses(&db).await);
    each_once(&sink, 200);
    assert_eq!(statuses(&db).await, "sent=200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_slot_reservation_that_loses_its_connection_is_made_again() {
    killed_reservation(("REMINDER_WHATSAPP_RATE", "2000/s"), "next_slot_ns").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_reservation_that_loses_its_connection_is_made_again() {
    let db = killed_reservation(("WHATSAPP_MONTHLY_QUOTA", "100000"), "quota_used").await;
    // The killed reservation never committed, and what the pass reserved it used.
    if let Some(db) = db {
        assert_eq!(db.int("SELECT sum(quota_used) FROM channel_state").await, 200);
    }
}

/// A pass under a limit reserves its slots or quota batch by batch. One reservation waits
/// behind a lock on the route's row, its connection is killed there, and the same pass goes on.
async fn killed_reservation(limit: (&'static str, &'static str), column: &str) -> Option<TestDb> {
    let db = TestDb::postgres().await?;
    many_due(&db, 200).await;
    db.pass(&["generate", "--now", T3_NOW], &[]).await;
    let sink = Sink::start(Duration::from_millis(10)).await;
    let env = sink_env(&sink, &[("REMINDER_CONCURRENCY", "4"), limit]);
    let pass = db.command(&["send", "--json", "--now", T3_NOW], &pairs(&env)).output();
    let fault = async {
        sink.wait_for(30, Duration::from_secs(20)).await;
        let statement = format!("AND query LIKE '%{column}%FOR UPDATE%'");
        kill_what_waits_behind(&db, "SELECT 1 FROM channel_state FOR UPDATE", &statement).await
    };
    let (out, killed) = tokio::join!(pass, fault);
    let out = out.expect("pass ran");
    assert_eq!(killed, 1, "one reservation was caught waiting and terminated");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let doc = json_of(&out);
    assert!(doc["halted"].is_null(), "{}", doc["halted"]);
    assert_eq!(doc["sent"].as_u64(), Some(200), "{}", doc["channels"]);
    each_once(&sink, 200);
    assert_eq!(statuses(&db).await, "sent=200");
    Some(db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_dropped_mid_pass_halts_sending_with_the_results_journaled() {
    let Some(db) = TestDb::postgres().await else { return };
    many_due(&db, 200).await;
    db.pass(&["generate", "--now", T3_NOW], &[]).await;
    let sink = Sink::start(Duration::from_millis(10)).await;
    let env = sink_env(&sink, &[("REMINDER_CONCURRENCY", "4")]);
    let pass = db.command(&["send", "--json", "--now", T3_NOW], &pairs(&env)).output();
    let fault = async {
        sink.wait_for(30, Duration::from_secs(20)).await;
        db.drop_database_now().await;
        sink.count()
    };
    let (out, at_drop) = tokio::join!(pass, fault);
    let out = out.expect("pass ran");
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let doc = json_of(&out);
    let unrecorded = doc["unrecorded_results"].as_u64().unwrap_or(0);
    assert!(unrecorded > 0, "{doc}");
    assert_eq!(doc["journaled_results"].as_u64(), Some(unrecorded), "{doc}");
    // What was in flight finished; nothing new started once results could not be stored.
    assert!(sink.count() <= at_drop + 4 + 4, "{} sent after the drop at {at_drop}", sink.count());
    let journal = db.dir.path().join(".reminderctl");
    let kept = std::fs::read_dir(&journal).map_or(0, Iterator::count);
    assert_eq!(kept, 1, "one journal file in {}", journal.display());
}

both!(a_killed_pass_sends_at_most_concurrency_messages_twice, kill_body);
async fn kill_body(db: &TestDb) {
    many_due(db, 100).await;
    db.pass(&["generate", "--now", T3_NOW], &[]).await;
    let sink = Sink::start(Duration::from_millis(100)).await;
    let env = sink_env(&sink, &[("REMINDER_CONCURRENCY", "4"), ("REMINDER_HTTP_TIMEOUT", "1")]);
    let mut child = db.command(&["send", "--now", T3_NOW], &pairs(&env)).spawn().expect("spawn");
    sink.wait_for(20, Duration::from_secs(20)).await;
    child.kill().await.expect("kill -9");
    assert!(db.int("SELECT count(*) FROM messages WHERE status = 'sending'").await > 0);
    // After the lease (the 1 s request timeout × (2 + 8 per delivery slot): a batch of 16 and
    // the batch queued ahead of it), the next pass delivers the rest.
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    db.pass(&["send", "--now", T3_NOW], &pairs(&env)).await;
    assert_eq!(statuses(db).await, "sent=100");
    let per = sink.per_recipient();
    assert_eq!(per.len(), 100, "every reminder delivered");
    let twice = per.values().filter(|n| **n > 1).count();
    assert!(twice <= 4, "{twice} reminders went out twice; the bound is REMINDER_CONCURRENCY");
    assert!(per.values().all(|n| *n <= 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_whose_clock_runs_twenty_minutes_ahead_steals_no_lease() {
    if !have_tool("faketime", "the clock-skew test") {
        return;
    }
    let Some(db) = TestDb::postgres().await else { return };
    many_due(&db, 240).await;
    db.exec("DELETE FROM invoices").await;
    // Scheduled messages are due whatever today is, so both hosts run on their own clocks.
    db.exec(
        "INSERT INTO scheduled_messages (contact_id, body, scheduled_at) \
         SELECT id, 'Halo', '2025-11-17T08:00:00+07:00' FROM contacts",
    )
    .await;
    db.pass(&["generate", "--now", T3_NOW], &[]).await;
    let sink = Sink::start(Duration::from_millis(20)).await;
    let env = sink_env(&sink, &[("REMINDER_CONCURRENCY", "4"), ("REMINDER_WHATSAPP_RATE", "60/s")]);
    let mut skewed_env = pairs(&env);
    skewed_env.push(("FAKETIME_DONT_FAKE_MONOTONIC", "1"));
    let normal = db.command(&["send", "--json"], &pairs(&env)).output();
    let ahead =
        db.command_via(&["faketime", "-f", "+20m"], &["send", "--json"], &skewed_env).output();
    let (normal, ahead) = tokio::join!(normal, ahead);
    let (normal, ahead) = (json_of(&normal.expect("normal")), json_of(&ahead.expect("ahead")));
    assert_eq!(sink.count(), 240, "normal: {normal}\nahead: {ahead}");
    each_once(&sink, 240);
    assert_eq!(statuses(&db).await, "sent=240");
    // Neither host starves the other: the shared rate limit runs on the database's clock.
    let sent = |d: &serde_json::Value| d["sent"].as_u64().unwrap_or(0);
    assert!(
        sent(&normal) > 0 && sent(&ahead) > 0,
        "normal {} ahead {}",
        sent(&normal),
        sent(&ahead)
    );
}

both!(a_provider_answering_200_with_an_html_page_is_not_believed, html_body);
async fn html_body(db: &TestDb) {
    many_due(db, 1).await;
    // A wrong TWILIO_API_BASE: a proxy's login page, HTTP 200.
    let server = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(
            wiremock::ResponseTemplate::new(200)
                .set_body_raw("<html><body>Please log in</body></html>", "text/html"),
        )
        .mount(&server)
        .await;
    let env = twilio_env(&server.uri());
    let doc = db.pass(&["run", "--now", T3_NOW], &pairs(&env)).await;
    assert_eq!((doc["sent"].as_u64(), doc["retried"].as_u64()), (Some(0), Some(1)), "{doc}");
    let error = db.text("SELECT last_error FROM messages").await.unwrap_or_default();
    assert!(error.contains("Please log in"), "the reply is quoted: {error}");
    // After the last attempt it is failed, with the reason; never `sent`.
    for later in ["2025-11-17T09:10:00+07:00", "2025-11-17T09:30:00+07:00"] {
        db.pass(&["send", "--now", later], &pairs(&env)).await;
    }
    assert_eq!(statuses(db).await, "failed=1");
    assert_eq!(server.received_requests().await.unwrap_or_default().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_whose_reply_never_ends_costs_one_bounded_attempt() {
    use tokio::io::AsyncWriteExt as _;
    let db = TestDb::sqlite().await;
    many_due(&db, 1).await;
    // HTTP 200, then bytes for ever.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = vec![0u8; 8192];
                let _ = tokio::io::AsyncReadExt::read(&mut socket, &mut request).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{\"sid\":\"";
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b'x'; 64 * 1024];
                while socket.write_all(&chunk).await.is_ok() {}
            });
        }
    });
    let env = twilio_env(&format!("http://127.0.0.1:{port}"));
    let started = std::time::Instant::now();
    let out =
        db.command(&["run", "--json", "--now", T3_NOW], &pairs(&env)).output().await.expect("ran");
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc = json_of(&out);
    assert_eq!(doc["sent"].as_u64(), Some(0), "{doc}");
    assert_eq!(statuses(&db).await, "pending=1");
    let error = db.text("SELECT last_error FROM messages").await.unwrap_or_default();
    assert!(!error.is_empty() && error.len() < 2000, "a short reason: {error}");
}

both!(a_journal_is_replayed_into_its_own_database_under_each_pass_token, journal_body);
async fn journal_body(db: &TestDb) {
    use reminderctl::deliver::journal::Journal;
    use reminderctl::domain::channel::{ChannelKind, Route};
    use reminderctl::domain::outbox::{Answer, Resolution};
    use reminderctl::store::ClaimRequest;

    for n in 1..=2 {
        crate::helpers::contact(db, &format!("C{n}"), &format!("0812345678{n:02}"), "whatsapp")
            .await;
        crate::helpers::invoice(db, n, &format!("INV-{n}"), "2025-11-20").await;
    }
    let (store, t0, queued) = crate::helpers::store_with_t3_queued(db).await;
    assert_eq!(queued, 2);
    // Two passes, one message each.
    let route = Route::of(ChannelKind::WhatsApp);
    let claim = |token: &'static str| ClaimRequest {
        route: &route,
        limit: 1,
        token,
        now: t0,
        lease: Duration::from_secs(60),
        only_scheduled: false,
    };
    let a = store.claim(&claim("pass-a")).await.expect("claim a")[0].id();
    let b = store.claim(&claim("pass-b")).await.expect("claim b")[0].id();
    let outcome =
        |id, resolution| crate::helpers::twilio_outcome(id, Answer::Accepted, resolution, t0);
    let sent = |sid: &str| Resolution::Sent { provider_message_id: Some(sid.into()) };

    // Both passes kept their results; a third, whose lease on `b` another pass overtook, kept
    // a failure for it. A token never leads a file out of the journal's folder.
    let dir = tempfile::tempdir().expect("journal dir");
    let journal = Journal::new(dir.path().to_path_buf(), &db.url);
    let kept = journal.keep("pass-a", &[outcome(a, sent("SM-a"))]).expect("keep a");
    assert!(kept.file_name().is_some_and(|n| n.to_string_lossy().ends_with("-pass-a.jsonl")));
    journal.keep("pass-b", &[outcome(b, sent("SM-b"))]).expect("keep b");
    let failed = Resolution::Failed { reason: "overtaken".into(), fallback: None };
    let odd = journal.keep("../pass/x", &[outcome(b, failed)]).expect("keep x");
    assert_eq!(odd.parent(), Some(dir.path()), "{}", odd.display());
    // Another database's journal in the same folder, for the same message ids.
    let other = Journal::new(dir.path().to_path_buf(), "sqlite:/elsewhere/other.db");
    let foreign = other.keep("pass-c", &[outcome(a, sent("SM-other"))]).expect("keep other");

    let done = journal.replay(store.as_ref()).await.expect("replay");
    assert_eq!((done.written, done.late), (3, 1), "three results written, one of them late");
    assert_eq!(
        db.text(
            "SELECT string_agg(provider_message_id, ',' ORDER BY id) FROM messages \
             WHERE status = 'sent'"
        )
        .await
        .as_deref(),
        Some("SM-a,SM-b"),
        "each result under its own pass's token, nothing from the other database"
    );
    assert_eq!(
        db.int("SELECT count(*) FROM delivery_attempts WHERE outcome LIKE 'late %'").await,
        1
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read journal dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    assert_eq!(left, vec![foreign], "only the other database's journal is left");
    // Replayed once: a second replay finds nothing to write.
    let again = journal.replay(store.as_ref()).await.expect("replay again");
    assert_eq!(again.written, 0);
}
