//! Every WhatsApp gateway of the seeds carries every family of reminder, and its channel-wide
//! failures pause the channel without spending attempts: the real binary against each
//! provider's documented contract on wiremock. And no credential of any provider or of SMTP is
//! ever printed or stored, whatever a server echoes back.

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

// --- No secret is ever printed or stored, whatever a provider echoes back -------------------
//
// Every provider and the SMTP server meet a server that echoes the request (path, headers with
// the credentials, body) back in its reply, in several statuses and shapes, some of them placing
// the first credential across the 300-character cut of a reason. Then nothing the binary prints
// (stdout, stderr at debug level) and nothing it stores (messages, delivery_attempts,
// channel_state) may carry any 10-character piece of any credential, in clear or in the base64
// forms the Authorization header and the SMTP AUTH lines carry.

const ECHO_TWILIO_SID: &str = "AC0123456789abcdef0123456789abcdef";
const ECHO_TWILIO_TOKEN: &str = "Tw7qZ2xK9vL4mR8pN3sB";
const ECHO_TELEGRAM_TOKEN: &str = "7654321:AAHq4Xz9Rr2Lm8Vt5Wp3Ks7Yn1Bc6Dg0Ff";
const ECHO_WAHA_KEY: &str = "Wh4XkP9qLm2Zr7Vt5Ns8";
const ECHO_FONNTE_TOKEN: &str = "Fn7xQ2vL9pR4sT8wK3mZ";
const ECHO_STARSENDER_KEY: &str = "St6yH1cJ8bN5mQ2xW9eR";
const ECHO_MAIL_USER: &str = "reminders@example.com";
const ECHO_MAIL_PASSWORD: &str = "Ml3kV8zQ1wX5cR9tY2uP";

/// Where an echo places its first credential when it aims at the cut: 14 characters before the
/// 300th, so a reason cut before it is redacted would keep 14 characters of it.
const ACROSS_THE_CUT: usize = 286;

/// Every form a credential can be printed in: raw, and base64 as Basic auth and AUTH carry it.
fn credential_forms() -> Vec<String> {
    let b64 = |s: &str| crate::smtp::encode_base64(s.as_bytes()).trim_end_matches('=').to_owned();
    let mut forms: Vec<String> = [
        ECHO_TWILIO_TOKEN,
        ECHO_TELEGRAM_TOKEN,
        ECHO_WAHA_KEY,
        ECHO_FONNTE_TOKEN,
        ECHO_STARSENDER_KEY,
        ECHO_MAIL_PASSWORD,
    ]
    .iter()
    .flat_map(|s| [(*s).to_owned(), b64(s)])
    .collect();
    forms.push(b64(&format!("{ECHO_TWILIO_SID}:{ECHO_TWILIO_TOKEN}")));
    forms.push(b64(&format!("\0{ECHO_MAIL_USER}\0{ECHO_MAIL_PASSWORD}")));
    forms
}

/// The credential forms of which `text` holds any 10-character piece.
fn leaks(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for form in credential_forms() {
        let chars: Vec<char> = form.chars().collect();
        for window in chars.windows(10) {
            let piece: String = window.iter().collect();
            if text.contains(&piece) && !found.contains(&form) {
                found.push(form.clone());
            }
        }
    }
    found
}

fn assert_no_leak(what: &str, text: &str) {
    let found = leaks(text);
    assert!(found.is_empty(), "{what} leaked {found:?}:\n{text}");
}

/// How an echo is laid out in the reply.
#[derive(Clone, Copy, Debug)]
enum Layout {
    /// A proxy's or a wrong base URL's HTML page.
    Html,
    /// One error object carrying the echo in every field a provider reads its words from.
    Json,
    /// Plain text.
    Text,
    /// `Unauthorized: ` and the echo.
    Unauthorized,
    /// A provider's success shape, with the echo as the message id.
    Success,
}

/// Whether the first credential is aimed at the cut, counted from the body or from the start
/// of the JSON fields (which is where the adapters quote from).
#[derive(Clone, Copy, Debug)]
enum Aim {
    Anywhere,
    CutOfBody,
    CutOfField,
}

/// The corpus: one reply per message, chosen by the message's recipient. The first eleven share
/// a pass; the two 401s take the channel down, so each gets a pass of its own.
const ECHOES: [(u16, Layout, Aim); 13] = [
    (200, Layout::Html, Aim::Anywhere),
    (200, Layout::Html, Aim::CutOfBody),
    (400, Layout::Json, Aim::Anywhere),
    (400, Layout::Json, Aim::CutOfField),
    (400, Layout::Json, Aim::CutOfBody),
    (500, Layout::Text, Aim::Anywhere),
    (500, Layout::Text, Aim::CutOfBody),
    (200, Layout::Json, Aim::Anywhere),
    (200, Layout::Json, Aim::CutOfField),
    (200, Layout::Json, Aim::CutOfBody),
    (201, Layout::Success, Aim::Anywhere),
    (401, Layout::Unauthorized, Aim::Anywhere),
    (401, Layout::Unauthorized, Aim::CutOfBody),
];

/// Recipients are `62812345670NN` (a phone, or a Telegram chat id): `NN` picks the echo.
const RECIPIENT_STEM: &str = "62812345670";

/// The request, credentials first: method and path, headers, body.
fn echo_of(request: &wiremock::Request) -> String {
    let mut target = request.url.path().to_owned();
    if let Some(query) = request.url.query() {
        target = format!("{target}?{query}");
    }
    let mut headers: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    headers.sort_by_key(|(name, _)| (name != "authorization" && name != "x-api-key", name.clone()));
    let mut parts = vec![format!("{} {target}", request.method)];
    parts.extend(headers.into_iter().map(|(name, value)| format!("{name}: {value}")));
    parts.push(format!("body: {}", String::from_utf8_lossy(&request.body)));
    parts.join(" | ")
}

struct Echo;

impl wiremock::Respond for Echo {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        let text = echo_of(request);
        let seen = format!("{text} {}", request.url);
        let case = seen
            .find(RECIPIENT_STEM)
            .and_then(|at| seen.get(at + RECIPIENT_STEM.len()..at + RECIPIENT_STEM.len() + 2))
            .and_then(|nn| nn.parse::<usize>().ok())
            .filter(|nn| *nn < ECHOES.len())
            .unwrap_or(0);
        let (status, layout, aim) = ECHOES[case];
        let first = credential_forms().iter().filter_map(|f| text.find(f.as_str())).min();
        let pad = |prefix: usize| -> String {
            let at = match aim {
                Aim::Anywhere => return String::new(),
                Aim::CutOfBody => ACROSS_THE_CUT.saturating_sub(prefix),
                Aim::CutOfField => ACROSS_THE_CUT,
            };
            "x".repeat(at.saturating_sub(first.unwrap_or(0)))
        };
        let quoted = |s: &str| serde_json::to_string(s).expect("a JSON string");
        let (body, content_type) = match layout {
            Layout::Html => {
                let open = "<!doctype html><html><body><pre>";
                (format!("{open}{}{text}</pre></body></html>", pad(open.len())), "text/html")
            }
            Layout::Text => (format!("{}{text}", pad(0)), "text/plain"),
            Layout::Unauthorized => {
                let open = "Unauthorized: ";
                (format!("{open}{}{text}", pad(open.len())), "text/plain")
            }
            Layout::Json => {
                // Written by hand so that "message" comes first: `{"message":"` is 12 chars.
                let v = quoted(&format!("{}{text}", pad(12)));
                (
                    format!(
                        r#"{{"message":{v},"code":21999,"status":false,"ok":false,"success":false,"error_code":400,"description":{v},"reason":{v},"error":{v},"statusCode":{status}}}"#
                    ),
                    "application/json",
                )
            }
            Layout::Success => {
                let v = quoted(&text);
                (
                    format!(
                        r#"{{"sid":{v},"ok":true,"result":{{"message_id":1}},"status":true,"success":true,"id":{v},"data":{{"id":{v}}}}}"#
                    ),
                    "application/json",
                )
            }
        };
        ResponseTemplate::new(status).set_body_raw(body.into_bytes(), content_type)
    }
}

/// Settings as the binary's environment takes them.
type Env = Vec<(&'static str, String)>;

/// Each HTTP provider: its name, its logical channel, and its credentials.
fn echo_providers() -> Vec<(&'static str, &'static str, Env)> {
    vec![
        (
            "twilio",
            "whatsapp",
            vec![
                ("TWILIO_ACCOUNT_SID", ECHO_TWILIO_SID.into()),
                ("TWILIO_AUTH_TOKEN", ECHO_TWILIO_TOKEN.into()),
                ("TWILIO_WHATSAPP_FROM", "+14155238886".into()),
            ],
        ),
        ("waha", "whatsapp", vec![("WAHA_API_KEY", ECHO_WAHA_KEY.into())]),
        ("fonnte", "whatsapp", vec![("FONNTE_TOKEN", ECHO_FONNTE_TOKEN.into())]),
        ("starsender", "whatsapp", vec![("STARSENDER_API_KEY", ECHO_STARSENDER_KEY.into())]),
        ("telegram", "telegram", vec![("TELEGRAM_BOT_TOKEN", ECHO_TELEGRAM_TOKEN.into())]),
    ]
}

fn base_variable(provider: &str) -> &'static str {
    match provider {
        "twilio" => "TWILIO_API_BASE",
        "waha" => "WAHA_BASE_URL",
        "fonnte" => "FONNTE_API_BASE",
        "starsender" => "STARSENDER_API_BASE",
        _ => "TELEGRAM_API_BASE",
    }
}

/// Every text column the outbox keeps.
async fn stored_texts(db: &TestDb) -> Vec<String> {
    let queries = [
        "SELECT COALESCE(last_error, '') || ' ' || COALESCE(provider_message_id, '') FROM messages",
        "SELECT COALESCE(error, '') || ' ' || COALESCE(provider_message_id, '') FROM delivery_attempts",
        "SELECT COALESCE(down_reason, '') FROM channel_state",
    ];
    let mut all = Vec::new();
    for sql in queries {
        let rows = match &db.pool {
            crate::helpers::Pool::Sqlite(p) => {
                sqlx::query_scalar::<_, String>(sql).fetch_all(p).await
            }
            crate::helpers::Pool::Postgres(p) => {
                sqlx::query_scalar::<_, String>(sql).fetch_all(p).await
            }
        };
        all.extend(rows.unwrap_or_else(|e| panic!("{sql}: {e}")));
    }
    all
}

/// Runs `reminderctl` with `args`, asserts it exits 0 and prints no credential, and returns
/// its stdout and stderr.
async fn run_clean(db: &TestDb, args: &[&str], env: &[(&'static str, String)]) -> (String, String) {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = db.run(args, &env).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{args:?}\nstdout: {stdout}\nstderr: {stderr}");
    assert_no_leak(&format!("stdout of {args:?}"), &stdout);
    assert_no_leak(&format!("stderr of {args:?}"), &stderr);
    (stdout, stderr)
}

/// One contact on `channel` with recipient `62812345670NN`, and an invoice due for it.
async fn echo_contact(db: &TestDb, tag: &str, channel: &str, case: usize) {
    let recipient = format!("{RECIPIENT_STEM}{case:02}");
    let phone = format!("0{}", &recipient[2..]);
    db.exec(&format!(
        "INSERT INTO contacts (name, phone, email, telegram_chat_id, channels) \
         VALUES ('{tag}', '{phone}', '{tag}@example.com', '{recipient}', '{channel}'); \
         INSERT INTO invoices (number, contact_id, amount, due_date) \
         SELECT 'INV-{tag}', id, 150000, '2025-11-20' FROM contacts WHERE name = '{tag}'"
    ))
    .await;
}

fn common_env(mail_port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("LOG_LEVEL", "debug".into()),
        ("REMINDER_WHATSAPP_RATE", "unlimited".into()),
        ("REMINDER_TELEGRAM_RATE", "unlimited".into()),
        ("REMINDER_EMAIL_RATE", "unlimited".into()),
        ("MAIL_HOST", "127.0.0.1".into()),
        ("MAIL_PORT", mail_port.to_string()),
        ("MAIL_ENCRYPTION", "none".into()),
        ("MAIL_USERNAME", ECHO_MAIL_USER.into()),
        ("MAIL_PASSWORD", ECHO_MAIL_PASSWORD.into()),
        ("MAIL_FROM_ADDRESS", "noreply@example.com".into()),
    ]
}

both!(no_provider_secret_is_ever_printed, no_secret_body);
async fn no_secret_body(db: &TestDb) {
    let unused_mail_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    for (phase, (provider, channel, settings)) in echo_providers().into_iter().enumerate() {
        let server = MockServer::start().await;
        Mock::given(wiremock::matchers::any()).respond_with(Echo).mount(&server).await;
        let mut env = common_env(unused_mail_port);
        env.extend(settings);
        env.push((base_variable(provider), server.uri()));
        if channel == "telegram" {
            env.push(("WHATSAPP_PROVIDER", "log".into()));
        } else {
            env.push(("TELEGRAM_PROVIDER", "log".into()));
        }
        let now = format!("2025-11-17T09:{:02}:00+07:00", phase * 5);
        // The eleven echoes that leave the channel up share a pass; each 401 takes it down.
        let passes: [&[usize]; 3] = [&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10], &[11], &[12]];
        for cases in passes {
            for case in cases {
                echo_contact(db, &format!("{provider}{case}"), channel, *case).await;
            }
            run_clean(db, &["run", "--json", "--now", &now], &env).await;
            // What this pass left pending has met its echo (the checks below make sure); it
            // must not be retried ahead of the next pass's message and take the channel down.
            db.exec(
                "UPDATE messages SET status = 'cancelled' WHERE status IN ('pending', 'sending')",
            )
            .await;
        }
        run_clean(db, &["status"], &env).await;
        run_clean(db, &["status", "--json"], &env).await;

        // Every message met the echo: one sent, every other one carries the echo's reason.
        let requests = server.received_requests().await.unwrap_or_default();
        for (case, echo) in ECHOES.iter().enumerate() {
            let stem = format!("{RECIPIENT_STEM}{case:02}");
            let reached = requests.iter().any(|r| {
                r.url.as_str().contains(&stem) || String::from_utf8_lossy(&r.body).contains(&stem)
            });
            assert!(reached, "{provider}: echo {case} {echo:?} was never requested");
        }
        let outcomes: Vec<(String, Option<String>)> = {
            let sql = format!(
                "SELECT m.status, m.last_error FROM messages m JOIN contacts c ON c.id = m.contact_id \
                 WHERE c.name LIKE '{provider}%' ORDER BY m.id"
            );
            match &db.pool {
                crate::helpers::Pool::Sqlite(p) => sqlx::query_as(&sql).fetch_all(p).await,
                crate::helpers::Pool::Postgres(p) => sqlx::query_as(&sql).fetch_all(p).await,
            }
            .expect("the phase's messages")
        };
        assert_eq!(outcomes.len(), ECHOES.len(), "{provider}: {outcomes:?}");
        let sent = outcomes.iter().filter(|(status, _)| status == "sent").count();
        assert_eq!(sent, 1, "{provider}: only the success-shaped echo is sent: {outcomes:?}");
        let redacted = outcomes
            .iter()
            .filter(|(_, error)| error.as_deref().is_some_and(|e| e.contains("[redacted]")))
            .count();
        assert!(redacted >= 5, "{provider}: the echoes were quoted and scrubbed: {outcomes:?}");
        for (status, error) in &outcomes {
            assert!(status == "sent" || error.is_some(), "{provider}: {outcomes:?}");
        }
    }

    smtp_echoes(db).await;

    for text in stored_texts(db).await {
        assert_no_leak("the outbox", &text);
    }
}

/// The SMTP server quotes the AUTH exchange back: in its 535 (once anywhere, once across the
/// cut), and, after a good AUTH, in its 550, 451 and 250 replies.
async fn smtp_echoes(db: &TestDb) {
    let wrong = format!("{ECHO_MAIL_USER}:not-the-configured-one");
    let right = format!("{ECHO_MAIL_USER}:{ECHO_MAIL_PASSWORD}");
    let at = ACROSS_THE_CUT.to_string();
    let phases: [(&[&str], &[&str]); 3] = [
        (&["--auth", &wrong, "--echo-auth"], &["mailone"]),
        (&["--auth", &wrong, "--echo-auth", "--echo-at", &at], &["mailtwo"]),
        (&["--auth", &right, "--echo-auth"], &["reject-three", "defer-three", "three"]),
    ];
    for (phase, (options, names)) in phases.into_iter().enumerate() {
        let Some(sink) = crate::smtp::SmtpSink::start_with(options).await else { return };
        for name in names {
            db.exec(&format!(
                "INSERT INTO contacts (name, email, channels) \
                 VALUES ('{name}', '{name}@example.com', 'email'); \
                 INSERT INTO invoices (number, contact_id, amount, due_date) \
                 SELECT 'INV-{name}', id, 150000, '2025-11-20' FROM contacts WHERE name = '{name}'"
            ))
            .await;
        }
        let mut env = common_env(sink.port);
        env.push(("WHATSAPP_PROVIDER", "log".into()));
        env.push(("TELEGRAM_PROVIDER", "log".into()));
        let now = format!("2025-11-17T10:{:02}:00+07:00", phase * 5);
        let (_, stderr) = run_clean(db, &["run", "--json", "--now", &now], &env).await;
        run_clean(db, &["status", "--json"], &env).await;
        for name in names {
            let error = db
                .text(&format!(
                    "SELECT m.last_error FROM messages m JOIN contacts c ON c.id = m.contact_id \
                     WHERE c.name = '{name}'"
                ))
                .await;
            if *name == "three" {
                assert!(error.is_none(), "{name}: {error:?}");
                let accepted = stderr
                    .lines()
                    .find(|l| l.contains("the SMTP server accepted the message"))
                    .unwrap_or_else(|| panic!("the 250 is logged at debug level: {stderr}"));
                assert!(accepted.contains("AUTH PLAIN [redacted]"), "{accepted}");
            } else {
                let error = error.unwrap_or_default();
                assert!(error.contains("AUTH PLAIN [redacted]"), "{name}: {error}");
            }
        }
        assert_eq!(sink.messages().len(), usize::from(phase == 2), "phase {phase}");
        db.exec("UPDATE messages SET status = 'cancelled' WHERE status IN ('pending', 'sending')")
            .await;
    }
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
