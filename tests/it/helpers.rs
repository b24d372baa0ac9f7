//! Test harness: a fresh database per test on each backend, the real binary, and fixtures.
//!
//! PostgreSQL comes from `TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`);
//! each test creates its own database there and drops it at the end, also when the test fails
//! (a guard drops it while the panic unwinds). Without a reachable server the PostgreSQL half of
//! each test is skipped, said loudly once, unless under CI (`CI` set to `true`, `1` or `yes`),
//! where an unreachable server fails the test instead.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::Output;
use std::sync::Once;

use serde_json::Value;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::SqlitePoolOptions;
use sqlx::{Connection, PgPool, SqlitePool};

/// The same test body, once per backend: `both!(name, body)` makes `name::sqlite` and
/// `name::postgres`, each calling `body(TestDb)`.
#[macro_export]
macro_rules! both {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let db = $crate::helpers::TestDb::sqlite().await;
                super::$body(&db).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(db) = $crate::helpers::TestDb::postgres().await else { return };
                super::$body(&db).await;
            }
        }
    };
}

pub enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

pub struct TestDb {
    pub url: String,
    pub pool: Pool,
    /// Working directory for the binary (and the SQLite file): no stray `.env` is read.
    pub dir: tempfile::TempDir,
    admin: Option<(String, String)>,
}

static SKIP_NOTICE: Once = Once::new();

/// The zone the tests' business dates are in (the default `REMINDER_TIMEZONE`).
pub const TZ: chrono_tz::Tz = chrono_tz::Asia::Jakarta;

/// Whether this run is CI, where skipping PostgreSQL is a failure.
pub fn under_ci() -> bool {
    std::env::var("CI")
        .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
}

impl Drop for TestDb {
    /// Drops the test's PostgreSQL database, on success and while a failed test unwinds. Runs on
    /// a thread of its own: the test's runtime may be the one unwinding.
    fn drop(&mut self) {
        let Some((admin, name)) = self.admin.take() else { return };
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

impl TestDb {
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite:{}", dir.path().join("test.db").display());
        let store = reminderctl::store::connect(&url, TZ).await.expect("open sqlite");
        store.migrate().await.expect("migrate sqlite");
        let pool = SqlitePoolOptions::new()
            .connect(&format!("{url}?mode=rwc"))
            .await
            .expect("sqlite pool");
        Self { url, pool: Pool::Sqlite(pool), dir, admin: None }
    }

    /// A fresh SQLite database in `dir` (a small tmpfs, say), the working directory elsewhere.
    pub async fn sqlite_in(dir: &std::path::Path) -> Self {
        let url = format!("sqlite:{}", dir.join("test.db").display());
        let store = reminderctl::store::connect(&url, TZ).await.expect("open sqlite");
        store.migrate().await.expect("migrate sqlite");
        let pool = SqlitePoolOptions::new()
            .connect(&format!("{url}?mode=rwc"))
            .await
            .expect("sqlite pool");
        Self { url, pool: Pool::Sqlite(pool), dir: tempfile::tempdir().expect("dir"), admin: None }
    }

    /// The SQLite file of this database.
    pub fn sqlite_path(&self) -> String {
        self.url.trim_start_matches("sqlite:").to_string()
    }

    /// Drops this PostgreSQL database now, under the feet of whatever uses it.
    pub async fn drop_database_now(&self) {
        let Some((admin, name)) = &self.admin else { return };
        let mut conn = sqlx::PgConnection::connect(admin).await.expect("admin");
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await
            .expect("drop database");
    }

    pub async fn postgres() -> Option<Self> {
        let admin = admin_url();
        let mut conn = match sqlx::PgConnection::connect(&admin).await {
            Ok(c) => c,
            Err(e) => {
                assert!(
                    !under_ci(),
                    "PostgreSQL at TEST_DATABASE_URL is unreachable under CI: {e}"
                );
                SKIP_NOTICE.call_once(|| {
                    // Written past the test harness's capture so that it shows.
                    let _ = writeln!(
                        std::io::stderr(),
                        "\n*** PostgreSQL is unreachable ({e}); the PostgreSQL half of every \
                         storage test is SKIPPED. Set TEST_DATABASE_URL to run it. ***\n"
                    );
                });
                return None;
            }
        };
        let name = format!("reminderctl_t_{:016x}", rand::random::<u64>());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        let url = format!("{base}/{name}");
        let store = reminderctl::store::connect(&url, TZ).await.expect("open postgres");
        store.migrate().await.expect("migrate postgres");
        let pool = PgPoolOptions::new().max_connections(4).connect(&url).await.expect("pg pool");
        Some(Self {
            url,
            pool: Pool::Postgres(pool),
            dir: tempfile::tempdir().expect("temp dir"),
            admin: Some((admin, name)),
        })
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.pool, Pool::Postgres(_))
    }

    /// Runs SQL that both dialects accept.
    pub async fn exec(&self, sql: &str) {
        match &self.pool {
            Pool::Sqlite(p) => sqlx::raw_sql(sql).execute(p).await.map(|_| ()),
            Pool::Postgres(p) => sqlx::raw_sql(sql).execute(p).await.map(|_| ()),
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// One integer from SQL that both dialects accept.
    pub async fn int(&self, sql: &str) -> i64 {
        let cast = format!("SELECT CAST(({sql}) AS BIGINT)");
        match &self.pool {
            Pool::Sqlite(p) => sqlx::query_scalar::<_, i64>(&cast).fetch_one(p).await,
            Pool::Postgres(p) => sqlx::query_scalar::<_, i64>(&cast).fetch_one(p).await,
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// One text value (or NULL) from SQL that both dialects accept.
    pub async fn text(&self, sql: &str) -> Option<String> {
        match &self.pool {
            Pool::Sqlite(p) => sqlx::query_scalar::<_, Option<String>>(sql).fetch_one(p).await,
            Pool::Postgres(p) => sqlx::query_scalar::<_, Option<String>>(sql).fetch_one(p).await,
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// The plan the database chose for `sql`, one step per line: `EXPLAIN QUERY PLAN`'s details
    /// on SQLite, `EXPLAIN`'s lines on PostgreSQL.
    pub async fn plan(&self, sql: &str) -> String {
        use sqlx::Row as _;
        let lines: Result<Vec<String>, sqlx::Error> = match &self.pool {
            Pool::Sqlite(p) => sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}"))
                .fetch_all(p)
                .await
                .and_then(|rows| rows.iter().map(|r| r.try_get::<String, _>("detail")).collect()),
            Pool::Postgres(p) => sqlx::query(&format!("EXPLAIN {sql}"))
                .fetch_all(p)
                .await
                .and_then(|rows| rows.iter().map(|r| r.try_get::<String, _>(0)).collect()),
        };
        lines.unwrap_or_else(|e| panic!("EXPLAIN {sql}: {e}")).join("\n")
    }

    /// The binary, with a clean environment pointed at this database. `env` adds variables.
    pub fn command(&self, args: &[&str], env: &[(&str, &str)]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_reminderctl"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &self.url)
            .env("REMINDER_SEND_WINDOW", "00:00-24:00")
            .env("NO_COLOR", "1")
            .current_dir(self.dir.path())
            .args(args)
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    /// The binary run through a wrapper program (`faketime -f +20m …`).
    pub fn command_via(
        &self,
        wrapper: &[&str],
        args: &[&str],
        env: &[(&str, &str)],
    ) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(wrapper[0]);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &self.url)
            .env("REMINDER_SEND_WINDOW", "00:00-24:00")
            .env("NO_COLOR", "1")
            .current_dir(self.dir.path())
            .args(&wrapper[1..])
            .arg(env!("CARGO_BIN_EXE_reminderctl"))
            .args(args)
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs the binary to completion.
    pub async fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.command(args, env).output().await.expect("run reminderctl")
    }

    /// Runs a pass with `--json` and returns the document; panics unless it exits 0.
    pub async fn pass(&self, args: &[&str], env: &[(&str, &str)]) -> Value {
        let mut all: Vec<&str> = args.to_vec();
        all.push("--json");
        let out = self.run(&all, env).await;
        assert!(
            out.status.success(),
            "reminderctl {args:?} exited {:?}\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
    }
}

/// Provider settings that route every channel to the log.
pub const LOG_CHANNELS: [(&str, &str); 3] =
    [("WHATSAPP_PROVIDER", "log"), ("TELEGRAM_PROVIDER", "log"), ("MAIL_MAILER", "log")];

/// Twilio on the sink, with extra settings replacing or adding to [`twilio_env`]'s.
pub fn sink_env(sink: &Sink, extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut env = twilio_env(&sink.uri());
    for (k, v) in extra {
        env.retain(|(key, _)| key != k);
        env.push((k, (*v).to_string()));
    }
    env
}

/// Twilio settings pointing at a loopback mock, with no rate limit.
pub fn twilio_env(base: &str) -> Vec<(&'static str, String)> {
    vec![
        ("TWILIO_ACCOUNT_SID", "AC0123456789abcdef0123456789abcdef".to_string()),
        ("TWILIO_AUTH_TOKEN", "twilio-secret-token-5f3a".to_string()),
        ("TWILIO_WHATSAPP_FROM", "+14155238886".to_string()),
        ("TWILIO_API_BASE", base.to_string()),
        ("REMINDER_WHATSAPP_RATE", "unlimited".to_string()),
    ]
}

/// Borrows a list of owned pairs as the `&[(&str, &str)]` the runners take.
pub fn pairs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// A contact with a WhatsApp number, returning nothing; ids are predictable in a fresh DB.
pub async fn contact(db: &TestDb, name: &str, phone: &str, channels: &str) {
    db.exec(&format!(
        "INSERT INTO contacts (name, phone, email, telegram_chat_id, channels) \
         VALUES ('{name}', '{phone}', 'x@example.com', '42', '{channels}')"
    ))
    .await;
}

/// An unpaid invoice for contact `contact_id`.
pub async fn invoice(db: &TestDb, contact_id: i64, number: &str, due: &str) {
    db.exec(&format!(
        "INSERT INTO invoices (number, contact_id, amount, due_date) \
         VALUES ('{number}', {contact_id}, 150000, '{due}')"
    ))
    .await;
}

/// The business time the library-level tests generate and claim at (09:00 in Jakarta).
pub const T3_AT: &str = "2025-11-17T02:00:00Z";

/// Opens the library's store on `db` and queues the T-3 dunning stage at [`T3_AT`] for the
/// invoices already there; returns the store, that time and how many were queued.
pub async fn store_with_t3_queued(
    db: &TestDb,
) -> (std::sync::Arc<dyn reminderctl::store::Store>, chrono::DateTime<chrono::Utc>, u64) {
    let store = reminderctl::store::connect(&db.url, TZ).await.expect("store");
    let t0: chrono::DateTime<chrono::Utc> = T3_AT.parse().expect("time");
    let window = (t0.date_naive(), t0.date_naive() + chrono::Duration::days(7));
    let scan = reminderctl::store::InputScan::default();
    let made = store.generate_dunning("T-3", window, &scan, t0, false, 10).await.expect("generate");
    (store, t0, made.queued)
}

/// The result of one Twilio request for message `id`, as a pass hands it to the store.
pub fn twilio_outcome(
    id: i64,
    answer: reminderctl::domain::outbox::Answer,
    resolution: reminderctl::domain::outbox::Resolution,
    at: chrono::DateTime<chrono::Utc>,
) -> reminderctl::domain::outbox::Outcome {
    reminderctl::domain::outbox::Outcome {
        id,
        channel: reminderctl::domain::channel::ChannelKind::WhatsApp,
        attempts: 0,
        request: Some(reminderctl::domain::outbox::Request {
            provider: "twilio".into(),
            answer,
            recipient: "6281234567890".into(),
            subject: None,
            body: None,
        }),
        resolution,
        at,
    }
}

/// The `details` of a pass document.
pub fn details(doc: &Value) -> Vec<Value> {
    doc["details"].as_array().cloned().unwrap_or_default()
}

/// Reads a JSON count.
pub fn count(doc: &Value, key: &str) -> u64 {
    doc[key].as_u64().unwrap_or_else(|| panic!("no count {key} in {doc}"))
}

#[allow(dead_code)]
pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Twilio's Messages path for the test account.
pub const TWILIO_PATH: &str =
    "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json";

/// A loopback Twilio that accepts everything, after `delay`, and records when each request
/// arrived and for whom: what the provider received is what the tests count.
pub struct Sink {
    pub server: wiremock::MockServer,
    log: std::sync::Arc<std::sync::Mutex<Vec<(std::time::Instant, String)>>>,
}

struct Recording {
    log: std::sync::Arc<std::sync::Mutex<Vec<(std::time::Instant, String)>>>,
    /// The delay of the first `first_count` requests, then of every later one.
    delay: std::time::Duration,
    first_count: usize,
    later: std::time::Duration,
}

impl wiremock::Respond for Recording {
    fn respond(&self, request: &wiremock::Request) -> wiremock::ResponseTemplate {
        let body = String::from_utf8_lossy(&request.body).to_string();
        let to = body.split('&').find(|p| p.starts_with("To=")).unwrap_or("").to_string();
        let n = {
            let mut log = self.log.lock().expect("sink log");
            log.push((std::time::Instant::now(), to));
            log.len()
        };
        wiremock::ResponseTemplate::new(201)
            .set_body_json(serde_json::json!({"sid": format!("SM{n:06}"), "status": "queued"}))
            .set_delay(if n <= self.first_count { self.delay } else { self.later })
    }
}

impl Sink {
    pub async fn start(delay: std::time::Duration) -> Self {
        Self::slow_then(delay, usize::MAX, delay).await
    }

    /// A sink whose first `first_count` answers take `delay`, and every later one `later`.
    pub async fn slow_then(
        delay: std::time::Duration,
        first_count: usize,
        later: std::time::Duration,
    ) -> Self {
        let server = wiremock::MockServer::start().await;
        let log = std::sync::Arc::default();
        let responder = Recording { log: std::sync::Arc::clone(&log), delay, first_count, later };
        wiremock::Mock::given(wiremock::matchers::method("POST"))
            .and(wiremock::matchers::path(TWILIO_PATH))
            .respond_with(responder)
            .mount(&server)
            .await;
        Self { server, log }
    }

    pub fn uri(&self) -> String {
        self.server.uri()
    }

    /// Requests received so far.
    pub fn count(&self) -> usize {
        self.log.lock().map_or(0, |l| l.len())
    }

    /// Waits until at least `n` requests arrived; panics after `within`.
    pub async fn wait_for(&self, n: usize, within: std::time::Duration) {
        let until = std::time::Instant::now() + within;
        while self.count() < n {
            assert!(std::time::Instant::now() < until, "the sink saw {} of {n}", self.count());
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// How many requests each recipient got.
    pub fn per_recipient(&self) -> std::collections::HashMap<String, usize> {
        let mut counts = std::collections::HashMap::new();
        for (_, to) in self.log.lock().expect("sink log").iter() {
            *counts.entry(to.clone()).or_insert(0) += 1;
        }
        counts
    }

    /// When each request arrived, in order.
    pub fn times(&self) -> Vec<std::time::Instant> {
        self.log.lock().expect("sink log").iter().map(|(t, _)| *t).collect()
    }
}

/// `n` contacts with distinct WhatsApp numbers, each with one unpaid invoice due 2025-11-20
/// (stage T-3 at [`T3_NOW`]). SQL both dialects accept.
pub async fn many_due(db: &TestDb, n: i64) {
    db.exec(&format!(
        "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < {n}) \
         INSERT INTO contacts (name, phone, channels) \
         SELECT 'Pelanggan ' || CAST(i AS TEXT), '0812' || CAST(10000000 + i AS TEXT), 'whatsapp' \
         FROM k"
    ))
    .await;
    db.exec(
        "INSERT INTO invoices (number, contact_id, amount, due_date) \
         SELECT 'INV-' || CAST(id AS TEXT), id, 150000, '2025-11-20' FROM contacts",
    )
    .await;
}

/// The business instant at which [`many_due`]'s invoices are at stage T-3.
pub const T3_NOW: &str = "2025-11-17T09:00:00+07:00";

/// The outbox's counts by status, as `status=count` pairs sorted by status.
pub async fn statuses(db: &TestDb) -> String {
    let mut out = Vec::new();
    for status in ["pending", "sending", "sent", "failed", "cancelled", "skipped"] {
        let n = db.int(&format!("SELECT count(*) FROM messages WHERE status = '{status}'")).await;
        if n > 0 {
            out.push(format!("{status}={n}"));
        }
    }
    out.join(" ")
}

/// Sends SIGTERM (or another signal) to a child process.
pub fn signal(child: &tokio::process::Child, sig: &str) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill").args(["-s", sig, &pid.to_string()]).status();
    }
}

/// Stops a child with SIGTERM; how it exited, and what it wrote to stderr (piped).
pub async fn terminate(child: &mut tokio::process::Child) -> (std::process::ExitStatus, String) {
    signal(child, "TERM");
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut e, &mut err).await;
    }
    (child.wait().await.expect("wait"), err)
}

/// Whether a tool the fault tests need is on this machine. Under CI its absence fails the test
/// (`.ci/run` installs it); elsewhere the test is skipped, saying so past the capture.
pub fn have_tool(tool: &str, why: &str) -> bool {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(!under_ci(), "{tool} is missing under CI ({why})");
        let _ = writeln!(std::io::stderr(), "\n*** {tool} is missing: SKIPPED {why} ***\n");
    }
    found
}

/// Parses a pass's `--json` output, whatever its exit code.
pub fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}
